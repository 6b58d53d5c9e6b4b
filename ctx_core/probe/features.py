"""What the probes see: the same preprocessed patches for every featuriser.

- **image features**: the patches of a grid over the whole image (step
  ``grid_stride_fraction`` x patch size), each through the featuriser, averaged;
- **crop features**: each object's box, widened to a square (clipped to the
  image) and resized to the patch size, through the featuriser.

Pixels go through the encoder's own test-time transform (its contract's chroma
and patch RMS) for every featuriser, so the learned encoder, the random-init
tower and raw pixels differ only in the function applied to identical inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ctx_core.encoder.artifact import EncoderContract
from ctx_core.encoder.embed import Embedder
from ctx_core.store.images import read_image
from ctx_core.store.labelled import ImageRecord


@dataclass(frozen=True)
class Crops:
    """Object crops of a split: pixels (N, 3, P, P) float 0-255, class index (N,), owning image index (N,)."""

    pixels: torch.Tensor
    labels: np.ndarray
    image: np.ndarray


def grid_patches(img: torch.Tensor, patch: int, stride_fraction: float) -> torch.Tensor:
    """uint8 (3, H, W) -> float (K, 3, patch, patch): every grid position, step round(patch * stride_fraction)."""
    step = max(1, round(patch * stride_fraction))
    x = img.float()[None]
    tiles = F.unfold(x, patch, stride=step)  # (1, 3 * patch * patch, K)
    return tiles[0].T.reshape(-1, 3, patch, patch)


def square_box(box: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """A VOC box (1-based inclusive x0, y0, x1, y1) widened to a square around its centre and
    shifted/clipped into the image; 0-based end-exclusive pixel bounds."""
    x0, y0, x1, y1 = float(box[0]) - 1, float(box[1]) - 1, float(box[2]), float(box[3])
    side = min(max(x1 - x0, y1 - y0), width, height)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = int(round(min(max(cx - side / 2, 0), width - side)))
    top = int(round(min(max(cy - side / 2, 0), height - side)))
    side_i = max(1, int(round(side)))
    return left, top, min(width, left + side_i), min(height, top + side_i)


def embed_all(embedder: Embedder, pixels: torch.Tensor, contract: EncoderContract, batch: int) -> np.ndarray:
    out = [embedder.embed(contract.preprocess(pixels[i:i + batch])) for i in range(0, len(pixels), batch)]
    return torch.cat(out).numpy() if out else np.zeros((0, embedder.dim), np.float32)


def image_features(records: Sequence[ImageRecord], embedders: Sequence[Embedder], contract: EncoderContract,
                   stride_fraction: float, batch: int, progress=None) -> dict[str, np.ndarray]:
    """featuriser name -> (n_images, dim): the mean of the image's grid patch features.

    Patches of consecutive images share a batch of about ``batch`` (one image's 20-40 patches
    alone keep 2 CPU cores a third busy); each image's mean is over its own patches only."""
    out: dict[str, list[np.ndarray]] = {e.name: [] for e in embedders}
    pending: list[torch.Tensor] = []

    def flush() -> None:
        if not pending:
            return
        counts = [len(p) for p in pending]
        pixels = torch.cat(pending)
        for e in embedders:
            feats = embed_all(e, pixels, contract, max(batch, len(pixels)))
            out[e.name] += [part.mean(axis=0) for part in np.split(feats, np.cumsum(counts)[:-1])]
        if progress is not None:
            progress.update(len(pending))
        pending.clear()

    for rec in records:
        pending.append(grid_patches(read_image(rec.path), contract.patch_size, stride_fraction))
        if sum(len(p) for p in pending) >= batch:
            flush()
    flush()
    dims = {e.name: e.dim for e in embedders}
    return {name: np.stack(rows) if rows else np.zeros((0, dims[name]), np.float32) for name, rows in out.items()}


def object_crops(records: Sequence[ImageRecord], classes: Sequence[str], patch: int, min_side: int) -> Crops:
    """One crop per non-difficult object whose box is at least ``min_side`` px on its longer side."""
    index = {c: k for k, c in enumerate(classes)}
    pixels, labels, owner = [], [], []
    for k, rec in enumerate(records):
        img = None
        for name, box, difficult in zip(rec.names, rec.boxes, rec.difficult):
            if difficult or name not in index or max(box[2] - box[0], box[3] - box[1]) + 1 < min_side:
                continue
            img = read_image(rec.path) if img is None else img
            x0, y0, x1, y1 = square_box(box, rec.width, rec.height)
            crop = img[:, y0:y1, x0:x1].float()[None]
            pixels.append(F.interpolate(crop, size=(patch, patch), mode="bilinear", antialias=True, align_corners=False)[0])
            labels.append(index[name])
            owner.append(k)
    if not pixels:
        return Crops(torch.zeros(0, 3, patch, patch), np.zeros(0, np.int64), np.zeros(0, np.int64))
    return Crops(torch.stack(pixels), np.asarray(labels, np.int64), np.asarray(owner, np.int64))


def image_labels(records: Sequence[ImageRecord], classes: Sequence[str]) -> dict[str, np.ndarray]:
    """Per class: 1 when the image has a non-difficult object of it, -1 when only difficult ones, else 0."""
    out = {}
    for cls in classes:
        y = np.zeros(len(records), np.int64)
        for k, rec in enumerate(records):
            hits = [not d for n, d in zip(rec.names, rec.difficult) if n == cls]
            y[k] = 1 if any(hits) else (-1 if hits else 0)
        out[cls] = y
    return out
