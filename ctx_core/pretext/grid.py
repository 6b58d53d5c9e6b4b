"""Patch-grid geometry and labels for context prediction.

A 3x3 grid of ``P``-px patches with ``G`` px between neighbours (pitch
``P + G``), each patch jittered by up to ``J`` px on each axis, at a random
origin. A pair's label is the raster position of the **second** patch
relative to the first::

    0 UL   1 U   2 UR
    3 L   (first)  4 R
    5 DL   6 D   7 DR
"""

from __future__ import annotations

import numpy as np

LABEL_NAMES = ("UL", "U", "UR", "L", "R", "DL", "D", "DR")
CENTRE = 4  # cell index of the middle patch in raster order (row * 3 + col)


def relative_label(first_cell: int, second_cell: int) -> int:
    """Label of ``second_cell`` relative to ``first_cell`` (cells 0..8 in raster order)."""
    dr = second_cell // 3 - first_cell // 3
    dc = second_cell % 3 - first_cell % 3
    if max(abs(dr), abs(dc)) != 1:
        raise ValueError(f"cells {first_cell} and {second_cell} are not 8-neighbours")
    idx = (dr + 1) * 3 + (dc + 1)
    return idx if idx < 4 else idx - 1


def _neighbour_pairs() -> np.ndarray:
    pairs = []
    for a in range(9):
        for b in range(9):
            if a != b and max(abs(a // 3 - b // 3), abs(a % 3 - b % 3)) == 1:
                pairs.append((a, b, relative_label(a, b)))
    return np.array(pairs, dtype=np.int64)


#: All ordered 8-neighbour pairs within a 3x3 grid: (first cell, second cell, label), shape (40, 3).
NEIGHBOUR_PAIRS = _neighbour_pairs()
#: The pairs whose first patch is the centre: one per label, shape (8, 3).
CENTRE_PAIRS = NEIGHBOUR_PAIRS[NEIGHBOUR_PAIRS[:, 0] == CENTRE]


def grid_extent(patch: int, gap: int, jitter: int) -> int:
    """Side (px) of the smallest image region that always holds the jittered grid."""
    return 3 * patch + 2 * gap + 2 * jitter


def sample_grid(
    rng: np.random.Generator, width: int, height: int, patch: int, gap: int, jitter: int
) -> np.ndarray:
    """Top-left corners (x, y) of the 9 patches of one grid, shape (9, 2), int64, raster order.

    The grid origin is uniform over all placements that keep every jittered
    patch inside the ``width`` x ``height`` image.
    """
    extent = grid_extent(patch, gap, jitter)
    if width < extent or height < extent:
        raise ValueError(f"image {width}x{height} px is smaller than the patch grid ({extent} px)")
    ox = int(rng.integers(jitter, width - extent + jitter + 1))
    oy = int(rng.integers(jitter, height - extent + jitter + 1))
    cells = np.arange(9)
    pitch = patch + gap
    xy = np.stack([ox + (cells % 3) * pitch, oy + (cells // 3) * pitch], axis=1)
    if jitter:
        xy = xy + rng.integers(-jitter, jitter + 1, size=(9, 2))
    return xy
