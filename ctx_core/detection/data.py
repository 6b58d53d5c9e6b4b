"""Training batches and test images for the detector.

A training batch is a pure function of ``(seed, step)``: resuming at step
``t`` replays the batches an uninterrupted run would have seen. Under
``torchrun`` rank ``r`` of ``W`` loads images ``[r B/W, (r+1) B/W)`` of that
global batch of ``B = batch_size``. Images are
float (3, H, W) in [0, 1]; targets hold ``boxes`` float32 (K, 4) as
torchvision wants them (0-based continuous pixels: VOC ``xmin - 1, ymin - 1,
xmax, ymax``) and ``labels`` int64 (K,) in 1..C (0 is background).
Scale jitter happens in the detector's transform (``model.train_min_sizes``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ctx_core.store.labelled import ImageRecord
from ctx_core.errors import UserError
from ctx_core.store.images import UnreadableImageError, read_image

log = logging.getLogger(__name__)


class NoTrainingObjects(UserError):
    """The training split has no object to learn from."""


def load_image(record: ImageRecord) -> torch.Tensor:
    """float32 (3, H, W) in [0, 1]; :class:`UnreadableImageError` naming the file when it cannot be decoded."""
    return read_image(record.path).float().div_(255.0)


def _first_readable(records: Sequence[ImageRecord], k: int, unreadable: dict[int, str]) -> tuple[int, torch.Tensor]:
    """Record ``k``'s image, or the next readable record's (in order, wrapping round): an
    unreadable image (cut or corrupt since ingestion) is skipped, logged once and added to
    ``unreadable`` (index -> why), so training goes on and stays a function of the files."""
    n = len(records)
    for i in ((k + j) % n for j in range(n)):
        if i in unreadable:
            continue
        try:
            return i, load_image(records[i])
        except UnreadableImageError as exc:
            unreadable[i] = str(exc)
            log.warning("detection training skips %s", exc)
    raise UserError(f"none of the {n} training images can be decoded, e.g. {next(iter(unreadable.values()))}")


def voc_to_torchvision(boxes: np.ndarray) -> torch.Tensor:
    """VOC 1-based inclusive (K, 4) -> 0-based continuous float32 (K, 4)."""
    out = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4).clone()
    out[:, :2] -= 1.0
    return out


def torchvision_to_voc(boxes: torch.Tensor) -> np.ndarray:
    """0-based continuous (K, 4) -> VOC 1-based inclusive float64 (K, 4)."""
    out = boxes.detach().double().cpu().numpy().reshape(-1, 4).copy()
    out[:, :2] += 1.0
    return out


def hflip(image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror (3, H, W) and its 0-based continuous boxes (K, 4) left-right."""
    width = image.shape[-1]
    flipped = boxes.clone()
    flipped[:, 0], flipped[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    return image.flip(-1), flipped


@dataclass
class TrainingSet:
    """Labelled images for training: objects of ``classes`` (difficult ones only with ``train_difficult``)."""

    records: Sequence[ImageRecord]
    classes: Sequence[str]
    batch_size: int
    seed: int
    flip: bool = True
    train_difficult: bool = False

    def __post_init__(self) -> None:
        self.unreadable: dict[int, str] = {}  # record index -> why its image was skipped
        index = {c: k + 1 for k, c in enumerate(self.classes)}
        self.targets = []
        for rec in self.records:
            keep = np.array([n in index and (self.train_difficult or not d) for n, d in zip(rec.names, rec.difficult)], bool)
            labels = torch.tensor([index[n] for n, k in zip(rec.names, keep) if k], dtype=torch.int64)
            self.targets.append((voc_to_torchvision(rec.boxes[keep]), labels))
        if not any(len(labels) for _, labels in self.targets):
            raise NoTrainingObjects(f"the training split has {len(self.records)} images but no object of {len(self.classes)} classes "
                                    f"to train on (detection.train_difficult = {self.train_difficult})")

    def batch(self, step: int, rank: int = 0, world: int = 1) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
        """Images ``[rank B/world, (rank+1) B/world)`` of step ``step``'s global batch of
        ``B = batch_size`` (drawn without replacement when there are enough) and their targets."""
        if self.batch_size % world or not 0 <= rank < world:
            raise ValueError(f"batch of {self.batch_size} images cannot be split into {world} equal parts (rank {rank})")
        rng = np.random.default_rng([self.seed, step])
        n = len(self.records)
        picks = rng.choice(n, size=self.batch_size, replace=self.batch_size > n)
        flips = rng.random(self.batch_size) < 0.5
        share = slice(rank * self.batch_size // world, (rank + 1) * self.batch_size // world)
        images, targets = [], []
        for k, flip in zip(picks[share].tolist(), flips[share].tolist()):
            k, image = _first_readable(self.records, k, self.unreadable)
            boxes, labels = self.targets[k]
            if self.flip and flip:
                image, boxes = hflip(image, boxes)
            images.append(image)
            targets.append({"boxes": boxes, "labels": labels})
        return images, targets


def calibration_images(records: Sequence[ImageRecord], count: int, seed: int) -> list[torch.Tensor]:
    """``count`` training images picked by ``seed``: float (3, H, W) in [0, 1]."""
    rng = np.random.default_rng([seed, 7919])
    picks = rng.choice(len(records), size=min(count, len(records)), replace=False)
    unreadable: dict[int, str] = {}
    return [_first_readable(records, k, unreadable)[1] for k in sorted(picks.tolist())]


def input_statistics(images: Sequence[torch.Tensor]) -> tuple[list[float], list[float]]:
    """Per-channel mean of pixels in [0, 1], and one std for all channels (so colour ratios are kept)."""
    flat = torch.cat([img.reshape(3, -1) for img in images], dim=1)
    mean = flat.mean(dim=1)
    std = (flat - mean[:, None]).pow(2).mean().sqrt().clamp_min(1e-3)
    return mean.tolist(), [float(std)] * 3
