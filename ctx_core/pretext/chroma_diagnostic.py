"""The paper's chromatic-aberration diagnostic.

Lenses shift colour channels more towards the image border, so a network can
tell where a single patch came from by its colour fringes, and solve context
prediction without looking at objects. The paper showed this by training a
net to regress a patch's absolute position. Here a small tower plus a linear
head regresses the patch centre (x, y as shares of the image width and
height) from patches preprocessed with and without the colour projection; the
RMSE is compared with always predicting the image centre. A ratio well below
1 without projection that rises towards 1 with it means colour carries
position and the projection removes it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ctx_core.config import PretrainConfig
from ctx_core.models.towers import build_tower
from ctx_core.pretext.augment import augment_patches
from ctx_core.pretext.data import ImageList, NoUsableImages, cut_patches
from ctx_core.store.images import UnreadableImageError, read_image

log = logging.getLogger(__name__)
_skipped: set[str] = set()  # unreadable images already logged by this process


@dataclass(frozen=True)
class PositionDiagnostic:
    chroma: str
    rmse: float  # in shares of the image side
    centre_rmse: float  # always predicting (0.5, 0.5)

    @property
    def ratio(self) -> float:
        return self.rmse / self.centre_rmse


def position_batch(images: ImageList, cfg: PretrainConfig, chroma: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` single patches at uniform positions: float (n, 3, P, P) and targets (n, 2) in [0, 1]."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    p = cfg.patch_size
    patches, targets = [], []
    per_image = 8
    draws = rng.integers(len(images.paths), size=-(-n // per_image)).tolist()
    for idx in draws:
        try:
            img = read_image(images.paths[idx])
        except UnreadableImageError as exc:  # skipped as in training: fewer patches this batch
            if str(exc) not in _skipped:
                _skipped.add(str(exc))
                log.warning("chromatic-aberration diagnostic skips %s", exc)
            continue
        h, w = img.shape[1:]
        xy = np.stack([rng.integers(0, w - p + 1, per_image), rng.integers(0, h - p + 1, per_image)], axis=1)
        patches.append(cut_patches(img, xy, p))
        targets.append(torch.as_tensor((xy + p / 2) / np.array([w, h]), dtype=torch.float32))
    if not patches:
        raise NoUsableImages(f"none of the {len(draws)} images drawn for the chromatic-aberration diagnostic "
                             f"can be decoded, e.g. {images.paths[draws[0]]}; re-run `ctx ingest --force`")
    x = augment_patches(torch.cat(patches)[:n], gen, chroma, cfg.pixelation_prob,
                        cfg.pixelation_min_side, cfg.pixelation_max_side, cfg.patch_rms)
    return x, torch.cat(targets)[:n]


def position_rmse(
    train: ImageList, held_out: ImageList, cfg: PretrainConfig, chroma: str, steps: int, batch: int = 128,
    eval_patches: int = 1024,
) -> PositionDiagnostic:
    """Train a fresh tower + linear head for ``steps`` steps; RMSE on held-out images."""
    torch.manual_seed(cfg.seed)
    tower = build_tower(cfg.arch, cfg.patch_size)
    model = nn.Sequential(tower, nn.Linear(tower.feature_dim, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(steps):
        x, y = position_batch(train, cfg, chroma, batch, seed=cfg.seed * 7919 + step)
        loss = F.mse_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    with torch.inference_mode():
        x, y = position_batch(held_out, cfg, chroma, eval_patches, seed=cfg.seed + 99_991)
        rmse = F.mse_loss(model(x), y).sqrt().item()
        centre = F.mse_loss(torch.full_like(y, 0.5), y).sqrt().item()
    return PositionDiagnostic(chroma, rmse, centre)


def chroma_diagnostic(
    train: ImageList, held_out: ImageList, cfg: PretrainConfig, steps: int, methods: Sequence[str] = ("none", "projection")
) -> list[PositionDiagnostic]:
    return [position_rmse(train, held_out, cfg, m, steps) for m in methods]
