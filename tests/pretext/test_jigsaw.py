"""Jigsaw puzzles: the permutation set, tile placement, pure batches, learning, resumption, bad files."""

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ctx_core.config import PretrainConfig
from ctx_core.pretext.data import usable_images
from ctx_core.pretext.jigsaw import TASK, JigsawSampler, min_hamming, permutation_set
from ctx_core.pretext.tasks import get_task
from ctx_core.pretext.train import train
from ctx_core.store.images import read_image
from tests.pretext.resume import assert_resumes_bitwise


def images(root: Path) -> list[Path]:
    return sorted((root / "JPEGImages").glob("*.jpg"))


def jigsaw_cfg(**kw) -> PretrainConfig:
    base = dict(task="jigsaw", jigsaw_permutations=6, steps=12, warmup_steps=2, checkpoint_every=4, log_every=1,
                workers=0, amp=False)
    return PretrainConfig(**{**base, **kw})


def sampler_for(paths, cfg: PretrainConfig, batch_size: int) -> JigsawSampler:
    return TASK.sampler(usable_images(paths, cfg, TASK.min_side(cfg)), cfg, batch_size)


def hamming(p, q) -> int:
    return sum(a != b for a, b in zip(p, q))


@pytest.mark.parametrize("n", [4, 10, 100])
def test_permutation_set_is_greedy_max_min_and_deterministic(n):
    perms = permutation_set(n, 0)
    assert perms.shape == (n, 9) and perms.dtype == np.int64
    assert all(sorted(p) == list(range(9)) for p in perms.tolist())
    assert len({tuple(p) for p in perms.tolist()}) == n
    rows = perms.tolist()
    plain_min = min(hamming(p, q) for p, q in itertools.combinations(rows, 2))
    assert min_hamming(perms) == plain_min
    # greedy max-min: each pick's distance to the set before it never grows, and the second pick is
    # a derangement of the first (distance 9 exists, so the maximum picks it)
    nearest = [min(hamming(rows[k], rows[j]) for j in range(k)) for k in range(1, n)]
    assert nearest[0] == 9 and nearest == sorted(nearest, reverse=True)
    assert np.array_equal(permutation_set(n, 0), perms) and not np.array_equal(permutation_set(n, 1), perms)
    # far better separated than the same number of random permutations
    rng = np.random.default_rng(0)
    random_set = np.stack([rng.permutation(9) for _ in range(n)])
    assert plain_min > min_hamming(random_set)


def test_permutation_set_refuses_impossible_sizes():
    with pytest.raises(ValueError, match="jigsaw_permutations = 0: expected 1 to 362880"):
        permutation_set(0, 0)


def test_tile_at_each_shuffled_position_is_the_cell_the_permutation_names(synth_root):
    # augmentation off and no jitter: every tile is a plain slice of the image, mean-removed and scaled
    cfg = jigsaw_cfg(chroma="none", pixelation_prob=0.0, jitter=0, gap=16)
    paths = images(synth_root)
    sampler = sampler_for(paths, cfg, 6)
    batch = sampler.batch(3)
    p, pitch = cfg.patch_size, cfg.patch_size + cfg.gap
    assert batch.patches.shape == (6 * 9, 3, p, p) and batch.labels.shape == (6,)
    for i in range(6):
        perm = sampler.permutations[int(batch.labels[i])]
        corners = batch.boxes[i, :, :2].numpy()
        img = read_image(sampler.images.paths[int(batch.image_index[i])]).double().numpy()
        origin = corners[list(perm).index(0)]  # where cell 0 (top left) went
        for k in range(9):
            cell = perm[k]
            x, y = origin + [(cell % 3) * pitch, (cell // 3) * pitch]
            assert (corners[k] == [x, y]).all()
            tile = img[:, y:y + p, x:x + p]
            tile = tile - tile.mean(axis=(1, 2), keepdims=True)
            tile = tile * cfg.patch_rms / np.sqrt((tile ** 2).mean())
            np.testing.assert_allclose(batch.patches[9 * i + k].numpy(), tile, atol=1e-3)


@pytest.mark.parametrize("chroma", ["projection", "color_dropping"])
def test_batch_is_pure_in_seed_and_step_and_ranks_slice_it(synth_root, chroma):
    cfg = jigsaw_cfg(chroma=chroma)
    paths = images(synth_root)
    whole = sampler_for(paths, cfg, 8).batch(5)
    again = sampler_for(paths, cfg, 8).batch(5)  # a fresh process's sampler
    fields = ("patches", "labels", "boxes", "image_index")
    for name in fields:
        assert torch.equal(getattr(whole, name), getattr(again, name))
    assert not torch.equal(whole.patches, sampler_for(paths, cfg, 8).batch(6).patches)
    for world in (2, 4):
        parts = [sampler_for(paths, cfg, 8).batch(5, rank=r, world=world) for r in range(world)]
        for name in fields:
            assert torch.equal(torch.cat([getattr(b, name) for b in parts]), getattr(whole, name))
    with pytest.raises(ValueError, match="8 puzzles cannot be split into 3"):
        sampler_for(paths, cfg, 8).batch(0, rank=0, world=3)


def test_learns_the_permutation_well_above_chance(synth_root, tmp_path):
    # edges left to continue (no gap, no jitter, colour kept): learnable in a few dozen steps on 2 images
    cfg = jigsaw_cfg(jigsaw_permutations=4, steps=25, gap=0, jitter=0, chroma="none", pixelation_prob=0.0,
                     optimizer="adamw", lr=2e-3, checkpoint_every=1000)
    sampler = sampler_for(images(synth_root)[:2], cfg, 8)
    result = train(cfg, sampler, tmp_path / "ck", progress=False)
    losses = [h["loss"] for h in result.history]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3, losses
    score = TASK.evaluate(result.model, sampler, 64, torch.device("cpu"))  # puzzles training never drew
    assert score.chance == 0.25 and score.items == 64 and score.confusion is None
    # chance 0.25; 0.5 is 4.6 binomial standard errors above it (seeds 0, 1, 2 reach 0.73, 0.82, 0.62 on 128)
    assert score.accuracy > 0.5, score


def test_resume_reproduces_the_uninterrupted_losses(synth_root, tmp_path):
    cfg = jigsaw_cfg(patch_size=16, gap=8)
    sampler = sampler_for(images(synth_root), cfg, 4)
    assert_resumes_bitwise(cfg, sampler, tmp_path)


def test_an_unreadable_image_is_skipped_not_a_crash(synth_root, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in images(synth_root)[:4]:
        shutil.copy2(p, folder / p.name)
    cfg = jigsaw_cfg()
    usable = usable_images(sorted(folder.glob("*.jpg")), cfg, TASK.min_side(cfg))
    bad = 1
    data = usable.paths[bad].read_bytes()
    usable.paths[bad].write_bytes(data[: len(data) // 2])  # the header survives: only decoding fails
    sampler = TASK.sampler(usable, cfg, 12)
    batch = sampler.batch(0)
    assert len(batch.labels) == 12 and bad not in batch.image_index.tolist()
    assert list(sampler.unreadable) == [bad] and "cannot be read" in sampler.unreadable[bad]
    # the substitutes depend on the files only: a fresh sampler draws the same puzzles
    assert torch.equal(TASK.sampler(usable, cfg, 12).batch(0).patches, batch.patches)


def test_task_plugs_into_the_interface(synth_root, tmp_path):
    assert get_task("jigsaw") is TASK
    default = PretrainConfig(batch_size=1280)  # params.yaml's: 32 grids of all 40 pairs, 288 tower passes
    assert TASK.batch_items(default) == default.tower_passes // 9 == 32
    cfg = jigsaw_cfg()
    model = TASK.model(cfg)
    assert model.tower.feature_dim == 512 and model.head[-1].out_features == 6
    sampler = sampler_for(images(synth_root), cfg, 4)
    assert model(sampler.batch(0).patches).shape == (4, 6)
    png = TASK.montage(sampler, sampler.images.paths, tmp_path / "puzzles.png", seed=1)
    assert png.is_file() and png.stat().st_size > 0
