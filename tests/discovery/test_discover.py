import numpy as np
import pandas as pd
import pytest
import torch

from ctx_core.config import DiscoveryConfig
from ctx_core.discovery.constellations import NoConstellationsError, all_constellations, sample_constellations
from ctx_core.discovery.discover import discover
from ctx_core.feature_store import FeatureSet, FeatureWriter

GRID, STRIDE, PATCH, DIM = 8, 16, 32, 64
PLANTED = {"im0": (0, 0), "im1": (3, 1), "im2": (5, 5), "im3": (1, 4), "im4": (2, 2)}
SCRAMBLED = ("im5", (4, 0))  # the same four patches, top corners swapped: not a square


def grid_index(image_id: str, cols: int = GRID, rows: int = GRID) -> pd.DataFrame:
    c, r = np.meshgrid(np.arange(cols), np.arange(rows))
    x0, y0 = c.ravel() * STRIDE, r.ravel() * STRIDE
    return pd.DataFrame({"image_id": image_id, "x0": x0, "y0": y0, "x1": x0 + PATCH, "y1": y0 + PATCH, "scale": 1.0})


@pytest.fixture
def planted(tmp_path) -> FeatureSet:
    """Six 8x8 grids of random features; five hold the same four features on
    a 2x2 constellation (cells two steps apart), one holds them scrambled."""
    gen = torch.Generator().manual_seed(0)
    parts = torch.randn(4, DIM, generator=gen)
    writer = FeatureWriter(tmp_path / "fs", DIM, True, 100, {"sampling": "dense", "stride_fraction": 0.5})
    layouts = {**{k: (v, [0, 1, 2, 3]) for k, v in PLANTED.items()}, SCRAMBLED[0]: (SCRAMBLED[1], [1, 0, 2, 3])}
    for image_id, ((c0, r0), order) in layouts.items():
        feats = torch.randn(GRID * GRID, DIM, generator=gen)
        for slot, (dc, dr) in zip(order, ((0, 0), (2, 0), (0, 2), (2, 2))):
            feats[(r0 + dr) * GRID + c0 + dc] = parts[slot] + 0.05 * torch.randn(DIM, generator=gen)
        writer.add(feats, grid_index(image_id))
    writer.close()
    return FeatureSet.open(tmp_path / "fs")


def test_constellations_are_adjacent_squares():
    index = grid_index("a", cols=4, rows=3)
    table = all_constellations(index, 2)
    assert table.tolist() == [[0, 2, 8, 10], [1, 3, 9, 11]]
    with pytest.raises(NoConstellationsError, match="no 2x2 constellation"):
        sample_constellations(grid_index("a", cols=2, rows=2), 2, 10, 0)


def test_discovery_finds_the_planted_object_and_rejects_the_scrambled_one(planted):
    cfg = DiscoveryConfig(constellations=10_000, top_k=5, min_members=3)
    clusters, stats = discover(planted, cfg)
    assert stats["constellations"] == 6 * 6 * 6 and stats["clusters"] == 1
    assert set(clusters["rank"]) == {1}
    assert sorted(clusters["image_id"]) == sorted(PLANTED)
    for row in clusters.itertuples():
        c0, r0 = PLANTED[row.image_id]
        assert (row.x0, row.y0, row.x1, row.y1) == (c0 * STRIDE, r0 * STRIDE, (c0 + 2) * STRIDE + PATCH, (r0 + 2) * STRIDE + PATCH)
    assert (clusters["role"] == "query").sum() == 1 and clusters.loc[clusters["role"] == "match", "similarity"].min() > 0.9


def test_without_verification_the_scrambled_image_would_match(planted):
    loose = DiscoveryConfig(constellations=10_000, top_k=5, min_members=3, max_residual=10.0, max_scale_ratio=100.0)
    clusters, _ = discover(planted, loose)
    assert SCRAMBLED[0] in set(clusters.loc[clusters["rank"] == 1, "image_id"])
