"""Constellations: four patches of one image and scale forming a 2x2 square.

Grid positions are recovered from the feature index: within one image and
scale, the rank of a patch's ``x0`` among the distinct ``x0`` values is its
column (likewise rows). The four patches are ``step`` grid positions apart,
where ``step = round(1 / stride_fraction)`` makes them adjacent (touching, not
overlapping), as in the paper.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ctx_core.errors import UserError


class NoConstellationsError(UserError):
    """No 2x2 constellation fits in any image of the feature set."""


def grid_cells(index: pd.DataFrame) -> pd.DataFrame:
    """``index`` -> (image_id, scale, col, row) per feature row, same order."""
    keys = [index["image_id"], index["scale"]]
    col = index.groupby(keys, sort=False)["x0"].rank(method="dense").astype(np.int64) - 1
    row = index.groupby(keys, sort=False)["y0"].rank(method="dense").astype(np.int64) - 1
    return pd.DataFrame({"image_id": index["image_id"], "scale": index["scale"], "col": col, "row": row})


def all_constellations(index: pd.DataFrame, step: int) -> np.ndarray:
    """Every 2x2 square of patches ``step`` cells apart: (M, 4) global rows, in
    order top-left, top-right, bottom-left, bottom-right."""
    cells = grid_cells(index)
    cells["rownum"] = np.arange(len(cells))
    keyed = cells.set_index(["image_id", "scale", "col", "row"])["rownum"]
    corners = []
    for dc, dr in ((0, 0), (step, 0), (0, step), (step, step)):
        shifted = pd.MultiIndex.from_arrays(
            [cells["image_id"], cells["scale"], cells["col"] + dc, cells["row"] + dr])
        corners.append(keyed.reindex(shifted).to_numpy())
    table = np.stack(corners, axis=1)
    ok = ~np.isnan(table.astype(float)).any(axis=1)
    return table[ok].astype(np.int64)


def sample_constellations(index: pd.DataFrame, step: int, count: int, seed: int) -> np.ndarray:
    """``count`` constellations drawn uniformly without replacement (all if fewer): (C, 4) rows."""
    table = all_constellations(index, step)
    if len(table) == 0:
        raise NoConstellationsError(
            f"no 2x2 constellation of adjacent patches fits in any of the {index['image_id'].nunique()} images; "
            "discovery needs features.sampling = dense and images at least twice the patch side at some scale")
    pick = np.random.default_rng(seed).choice(len(table), size=min(count, len(table)), replace=False)
    return table[np.sort(pick)]
