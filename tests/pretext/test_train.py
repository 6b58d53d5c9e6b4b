"""Training: learning on a tiny set, exact resumption, checkpoint faults, divergence."""

from pathlib import Path

import pytest
import torch

from ctx_core.config import PretrainConfig
from ctx_core.pretext import train as train_mod
from ctx_core.pretext.data import PairSampler, pair_loader, usable_images
from ctx_core.checkpoints import CheckpointError
from ctx_core.pretext.train import schedule, train
from ctx_core.training import NonFiniteLoss, lr_factor
from tests.pretext.resume import assert_resumes_bitwise


def images(root: Path):
    return sorted((root / "JPEGImages").glob("*.jpg"))


def tiny_cfg(**kw) -> PretrainConfig:
    base = dict(batch_size=32, steps=12, warmup_steps=2, checkpoint_every=4, log_every=1, workers=0,
                amp=False, pairs_per_grid=8, eval_pairs=64)
    return PretrainConfig(**{**base, **kw})


def test_loss_goes_down_on_a_tiny_set(synth_root, tmp_path):
    # edge continuation left in (no gap, no jitter, colour kept): easy enough to learn in seconds
    cfg = tiny_cfg(steps=100, gap=0, jitter=0, chroma="none", pixelation_prob=0.0, optimizer="adamw", lr=2e-3,
                   checkpoint_every=1000)
    sampler = PairSampler(usable_images(images(synth_root)[:2], cfg), cfg)
    result = train(cfg, sampler, tmp_path / "ck", progress=False)
    losses = [h["loss"] for h in result.history]
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < first - 0.3, (first, last)


def test_resume_reproduces_the_uninterrupted_losses(synth_root, tmp_path):
    cfg = tiny_cfg()
    sampler = PairSampler(usable_images(images(synth_root), cfg), cfg)
    assert_resumes_bitwise(cfg, sampler, tmp_path)
    # only the newest checkpoints are kept
    assert [p.name for p in sorted((tmp_path / "resumed").glob("*.pt"))] == ["step-0000008.pt", "step-0000012.pt"]


def test_worker_processes_deliver_batches_in_step_order(synth_root):
    cfg = tiny_cfg(batch_size=8)
    sampler = PairSampler(usable_images(images(synth_root), cfg), cfg)
    got = list(pair_loader(sampler, 3, 9, workers=2))
    assert [b.step for b in got] == list(range(3, 9))
    for b in got:
        assert torch.equal(b.first, sampler.batch(b.step).first)


def test_resume_faults_give_clear_errors_and_keep_old_checkpoints(synth_root, tmp_path):
    cfg = tiny_cfg()
    sampler = PairSampler(usable_images(images(synth_root), cfg), cfg)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(cfg, sampler, tmp_path / "none", resume=True, progress=False)
    folder = tmp_path / "ck"
    train(cfg, sampler, folder, progress=False, stop_after=8)
    with pytest.raises(CheckpointError, match=r"other settings \(lr: 0.01 -> 0.5, seed: 0 -> 3\)"):
        train(cfg.model_copy(update={"lr": 0.5, "seed": 3}), sampler, folder, resume=True, progress=False)
    (folder / "step-0000009.pt").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="step-0000009.pt is corrupt.*step-0000008.pt is kept"):
        train(cfg, sampler, folder, resume=True, progress=False)
    assert (folder / "step-0000008.pt").is_file()


def test_non_finite_loss_stops_with_step_and_lr(synth_root, tmp_path, monkeypatch):
    cfg = tiny_cfg()
    sampler = PairSampler(usable_images(images(synth_root), cfg), cfg)
    monkeypatch.setattr(train_mod.F, "cross_entropy", lambda logits, labels: (logits.sum() * float("nan")))
    with pytest.raises(NonFiniteLoss, match=r"stopped at step 0: the loss is nan \(lr 0.005\); lower pretrain.lr"):
        train(cfg, sampler, tmp_path / "ck", progress=False)


def test_lr_schedule_warmup_cosine_and_step():
    cfg = PretrainConfig(steps=110, warmup_steps=10, schedule="cosine")
    cosine = schedule(cfg)
    assert lr_factor(0, cosine) == pytest.approx(0.1) and lr_factor(9, cosine) == pytest.approx(1.0)
    assert lr_factor(60, cosine) == pytest.approx(0.5) and lr_factor(110, cosine) == pytest.approx(0.0)
    step = schedule(cfg.model_copy(update={"schedule": "step"}))
    assert lr_factor(50, step) == 1.0 and lr_factor(80, step) == pytest.approx(0.1)
    assert lr_factor(100, step) == pytest.approx(0.01)


@pytest.mark.parametrize("kw", [dict(pairs_per_grid=6), dict(pairs="random_neighbour"),
                                dict(pairs_per_grid=5, chroma="color_dropping")])
def test_ranks_split_one_global_batch(synth_root, kw):
    # the union of the ranks' slices is the 1-process batch, pair for pair, whatever the world size
    cfg = tiny_cfg(batch_size=12, **kw)
    sampler = PairSampler(usable_images(images(synth_root), cfg), cfg)
    whole = sampler.batch(5)
    assert len(whole.labels) == 12
    for world in (2, 3, 4):
        parts = [sampler.batch(5, rank=r, world=world) for r in range(world)]
        assert all(len(p.labels) == 12 // world for p in parts)
        for name in ("first", "second", "labels", "boxes", "image_index"):
            assert torch.equal(torch.cat([getattr(p, name) for p in parts]), getattr(whole, name)), (world, name)
    assert not torch.equal(sampler.batch(6).first, whole.first)
    with pytest.raises(ValueError, match="cannot be split into 5"):
        sampler.batch(5, rank=0, world=5)


def test_decoded_image_cache_changes_nothing_but_speed(synth_root):
    import pickle

    paths = images(synth_root)
    cached_cfg, plain_cfg = tiny_cfg(image_cache_mb=1024), tiny_cfg(image_cache_mb=0)
    cached = PairSampler(usable_images(paths, cached_cfg), cached_cfg)
    plain = PairSampler(usable_images(paths, plain_cfg), plain_cfg)
    for step in (0, 1, 0):  # the second visit of step 0 reads from the cache
        a, b = cached.batch(step), plain.batch(step)
        assert torch.equal(a.first, b.first) and torch.equal(a.second, b.second) and torch.equal(a.labels, b.labels)
    assert cached._cache and not plain._cache
    # the budget is a hard limit: 1 MiB holds about a dozen 192-px images, not all 40
    small_cfg = tiny_cfg(image_cache_mb=1)
    small = PairSampler(usable_images(paths, small_cfg), small_cfg)
    seen = set()
    for step in range(8):
        seen |= set(small.batch(step).image_index.tolist())
    kept = sum(t.numel() for t in small._cache.values())
    largest = max(t.numel() for t in cached._cache.values())
    assert kept <= 2**20 < kept + largest and len(small._cache) < len(seen)
    # a DataLoader worker starts with an empty cache (no copy of the parent's decoded images)
    assert pickle.loads(pickle.dumps(cached))._cache == {}
