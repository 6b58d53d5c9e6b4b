"""Labels, gap and jitter bounds, checked against plain computations."""

import numpy as np
import pytest
import torch

from ctx_core.config import PretrainConfig
from ctx_core.pretext.data import PairSampler, cut_patches, ImageList
from ctx_core.pretext.grid import (
    CENTRE_PAIRS, LABEL_NAMES, NEIGHBOUR_PAIRS, grid_extent, relative_label, sample_grid,
)

# The documented convention, written out by hand: (row offset, col offset) of the
# second patch relative to the first -> label.
EXPECTED = {(-1, -1): 0, (-1, 0): 1, (-1, 1): 2, (0, -1): 3, (0, 1): 4, (1, -1): 5, (1, 0): 6, (1, 1): 7}


def test_labels_follow_raster_order_of_second_patch():
    assert LABEL_NAMES == ("UL", "U", "UR", "L", "R", "DL", "D", "DR")
    for (dr, dc), label in EXPECTED.items():
        first = 4  # centre
        second = (1 + dr) * 3 + (1 + dc)
        assert relative_label(first, second) == label
    # the same offsets from a corner cell
    assert relative_label(0, 4) == EXPECTED[(1, 1)] and relative_label(8, 4) == EXPECTED[(-1, -1)]
    with pytest.raises(ValueError):
        relative_label(0, 2)


def test_neighbour_pair_tables():
    assert len(NEIGHBOUR_PAIRS) == 40  # 20 adjacent unordered pairs, both orders
    for a, b, label in NEIGHBOUR_PAIRS:
        dr, dc = b // 3 - a // 3, b % 3 - a % 3
        assert EXPECTED[(dr, dc)] == label
    counts = np.bincount(NEIGHBOUR_PAIRS[:, 2], minlength=8)
    assert counts.tolist() == [4, 6, 4, 6, 6, 4, 6, 4]  # axis-aligned pairs outnumber diagonals
    assert sorted(CENTRE_PAIRS[:, 2].tolist()) == list(range(8))


@pytest.mark.parametrize("patch, gap, jitter", [(32, 16, 2), (96, 48, 7), (8, 0, 0)])
def test_grid_gap_jitter_and_bounds(patch, gap, jitter):
    rng = np.random.default_rng(0)
    w, h = grid_extent(patch, gap, jitter) + 37, grid_extent(patch, gap, jitter) + 5
    origins = set()
    for _ in range(300):
        xy = sample_grid(rng, w, h, patch, gap, jitter)
        assert xy.shape == (9, 2)
        assert (xy >= 0).all() and (xy[:, 0] + patch <= w).all() and (xy[:, 1] + patch <= h).all()
        nominal = xy - np.array([[c % 3, c // 3] for c in range(9)]) * (patch + gap)
        # every patch sits within +-jitter of one common origin
        assert (nominal.max(0) - nominal.min(0) <= 2 * jitter).all()
        # horizontal / vertical neighbours: gap between them is gap +- 2 jitter
        for a, b in ((0, 1), (1, 2), (3, 4), (4, 5), (6, 7), (7, 8)):
            assert gap - 2 * jitter <= xy[b, 0] - (xy[a, 0] + patch) <= gap + 2 * jitter
        for a, b in ((0, 3), (3, 6), (1, 4), (4, 7), (2, 5), (5, 8)):
            assert gap - 2 * jitter <= xy[b, 1] - (xy[a, 1] + patch) <= gap + 2 * jitter
        origins.add(tuple(nominal.min(0)))
    assert len(origins) > 20  # the origin is random


def test_grid_refuses_small_images():
    with pytest.raises(ValueError, match="smaller than the patch grid"):
        sample_grid(np.random.default_rng(0), 100, 300, 32, 16, 2)


def test_cut_patches_matches_slicing():
    img = torch.randint(0, 256, (3, 50, 60), dtype=torch.uint8)
    corners = np.array([[0, 0], [10, 5], [52, 42]])
    out = cut_patches(img, corners, 8)
    for k, (x, y) in enumerate(corners):
        assert torch.equal(out[k], img[:, y : y + 8, x : x + 8])


def test_sampler_labels_match_patch_positions(tmp_path):
    from PIL import Image

    path = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (160, 200, 3), dtype=np.uint8)).save(path)
    cfg = PretrainConfig(patch_size=16, gap=8, jitter=2, batch_size=64, chroma="none", pixelation_prob=0.0)
    batch = PairSampler(ImageList((path,), ((200, 160),), 0), cfg).batch(step=3)
    assert batch.first.shape == (64, 3, 16, 16) and batch.labels.shape == (64,)
    for (fa, sa), label in zip(batch.boxes.tolist(), batch.labels.tolist()):
        # relative offset of the boxes, in units of the pitch, gives the label
        dx = round((sa[0] - fa[0]) / 24)
        dy = round((sa[1] - fa[1]) / 24)
        assert EXPECTED[(dy, dx)] == label
    again = PairSampler(ImageList((path,), ((200, 160),), 0), cfg).batch(step=3)
    assert torch.equal(again.first, batch.first) and torch.equal(again.labels, batch.labels)
    other = PairSampler(ImageList((path,), ((200, 160),), 0), cfg).batch(step=4)
    assert not torch.equal(other.first, batch.first)


def test_a_grid_cuts_and_augments_each_patch_once(tmp_path):
    from PIL import Image

    path = tmp_path / "a.png"
    pixels = np.random.default_rng(2).integers(0, 255, (160, 200, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    cfg = PretrainConfig(patch_size=16, gap=8, jitter=2, batch_size=80, pairs_per_grid=40, pixelation_prob=0.5,
                         pixelation_min_side=2, pixelation_max_side=8)
    batch = PairSampler(ImageList((path,), ((200, 160),), 0), cfg).batch(step=1)
    # 2 grids of 40 pairs: 9 patches each, every one used by 2 to 8 pairs as first and as second
    assert batch.patches.shape == (18, 3, 16, 16) and batch.pair_index.shape == (80, 2)
    for g in range(2):
        rows = batch.pair_index[40 * g: 40 * (g + 1)]
        assert set(rows.flatten().tolist()) == set(range(9 * g, 9 * g + 9))
    # a patch appears identically (same pixelation draw) in every pair using it, at its box
    boxes = batch.boxes.reshape(-1, 4).tolist()
    rows = batch.pair_index.reshape(-1).tolist()
    where = {}
    for row, box in zip(rows, boxes):
        assert where.setdefault(row, box) == box
    # and the unpixelated ones are the projected, normalised crops (NumPy reference)
    a = np.array([[-1.0, 2.0, -1.0]])
    proj = np.eye(3) - a.T @ a / (a @ a.T)
    plain = 0
    for row, (x0, y0, x1, y1) in where.items():
        crop = pixels[y0:y1, x0:x1].astype(np.float64) @ proj.T
        crop -= crop.mean(axis=(0, 1))
        crop *= 50.0 / np.sqrt((crop**2).mean())
        if np.allclose(batch.patches[row].permute(1, 2, 0).numpy(), crop, atol=1e-3):
            plain += 1
    assert 4 <= plain < 18  # about half are pixelated (p = 0.5)
    assert torch.equal(batch.first[0], batch.patches[batch.pair_index[0, 0]])


def test_shared_patches_give_the_logits_of_separate_pairs(tmp_path):
    from PIL import Image

    from ctx_core.models.siamese import ContextPredictionNet
    from ctx_core.models.towers import build_tower

    path = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (160, 200, 3), dtype=np.uint8)).save(path)
    cfg = PretrainConfig(patch_size=32, gap=16, jitter=2, batch_size=40, pairs_per_grid=40)
    batch = PairSampler(ImageList((path,), ((200, 160),), 0), cfg).batch(step=0)
    torch.manual_seed(0)
    net = ContextPredictionNet(build_tower("compact", 32)).eval()
    with torch.no_grad():
        shared = net(batch.patches, batch.pair_index)
        separate = net.pairs(batch.first, batch.second)
    assert torch.allclose(shared, separate, atol=1e-5)
