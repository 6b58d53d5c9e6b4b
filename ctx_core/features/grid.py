"""Where patches are cut: a dense multi-scale grid, or random positions.

A patch at scale ``s`` is a ``patch`` x ``patch`` square of the image resized
by ``s``; its box in the original image is that square divided by ``s``
(0-based pixel coordinates, end exclusive, rounded).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ScaleLayout:
    """Patches of one image at one scale.

    ``size``: (width, height) of the resized image, px; ``corners``: (K, 2)
    int64 top-left x, y in the resized image; ``boxes``: (K, 4) int64 x0, y0,
    x1, y1 in the original image.
    """

    scale: float
    size: tuple[int, int]
    corners: np.ndarray
    boxes: np.ndarray


def resized_size(width: int, height: int, scale: float) -> tuple[int, int]:
    return max(1, round(width * scale)), max(1, round(height * scale))


def _boxes(corners: np.ndarray, scale: float, patch: int, width: int, height: int) -> np.ndarray:
    x0 = np.rint(corners[:, 0] / scale)
    y0 = np.rint(corners[:, 1] / scale)
    x1 = np.minimum(np.rint((corners[:, 0] + patch) / scale), width)
    y1 = np.minimum(np.rint((corners[:, 1] + patch) / scale), height)
    return np.stack([x0, y0, x1, y1], axis=1).astype(np.int64)


def dense_layout(width: int, height: int, patch: int, scales: tuple[float, ...], stride_fraction: float) -> list[ScaleLayout]:
    """Every grid position at every scale whose resized image holds a patch.

    Grid step ``max(1, round(patch * stride_fraction))`` px in the resized image,
    starting at the top-left corner.
    """
    step = max(1, round(patch * stride_fraction))
    out = []
    for s in scales:
        w, h = resized_size(width, height, s)
        if w < patch or h < patch:
            continue
        xs, ys = np.arange(0, w - patch + 1, step), np.arange(0, h - patch + 1, step)
        gy, gx = np.meshgrid(ys, xs, indexing="ij")
        corners = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.int64)
        out.append(ScaleLayout(s, (w, h), corners, _boxes(corners, s, patch, width, height)))
    return out


def random_layout(
    width: int, height: int, patch: int, scales: tuple[float, ...], count: int, rng: np.random.Generator
) -> list[ScaleLayout]:
    """``count`` patches at uniform random scales (among those that fit) and positions."""
    fitting = [s for s in scales if min(resized_size(width, height, s)) >= patch]
    if not fitting:
        return []
    picks = rng.integers(0, len(fitting), size=count)
    out = []
    for i, s in enumerate(fitting):
        n = int((picks == i).sum())
        if n == 0:
            continue
        w, h = resized_size(width, height, s)
        corners = np.stack([rng.integers(0, w - patch + 1, n), rng.integers(0, h - patch + 1, n)], axis=1).astype(np.int64)
        out.append(ScaleLayout(s, (w, h), corners, _boxes(corners, s, patch, width, height)))
    return out
