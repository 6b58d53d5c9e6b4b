"""Pretraining speed, as ratios measured in one run (the machine is shared and noisy).

1. Sampler pairs/s: the vectorised ``PairSampler`` (decoded images cached, as
   in a run once every image has been seen; also without the cache) against a
   straightforward per-sample PIL implementation of the same recipe (goal >= 10x):
   one decode and one pair per sample, as a map-style Dataset's ``__getitem__``
   would do; and, stricter, against PIL code that also shares each grid's
   decode and patches among its pairs (one grid per sample).
2. Sampler pairs/s (one process) against the pairs/s the trainer consumes
   (forward + backward + SGD step on ready batches; goal >= 5x, so data never waits).
3. Training model-FLOP utilisation: FLOPs of a step (``torch.utils.flop_counter``)
   per second against the GEMM peak measured in this process (goal >= 50 %
   for ``compact`` in fp32 on the CPU; bf16 autocast reported against the bf16 peak).

    .venv/bin/python benchmarks/bench_pretrain.py [--images data/synth] [--pairs 2048]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from ctx_core.config import PretrainConfig
from ctx_core.pretext.data import PairSampler, usable_images
from ctx_core.pretext.grid import NEIGHBOUR_PAIRS, grid_extent
from ctx_core.pretext.train import build_model

ROOT = Path(__file__).resolve().parent.parent


PROJECTION = np.eye(3) - np.array([[-1.0, 2.0, -1.0]]).T @ np.array([[-1.0, 2.0, -1.0]]) / 6.0


def pil_patch(img: Image.Image, cell: int, origin: tuple[int, int], cfg: PretrainConfig,
              rng: np.random.Generator) -> torch.Tensor:
    """One jittered patch of grid ``cell`` cut with PIL, pixelated with probability
    ``pixelation_prob``, projected and normalised with NumPy: (3, P, P) float32."""
    p, pitch, j = cfg.patch_size, cfg.patch_size + cfg.gap, cfg.jitter
    x = origin[0] + (cell % 3) * pitch + rng.integers(-j, j + 1)
    y = origin[1] + (cell // 3) * pitch + rng.integers(-j, j + 1)
    patch = img.crop((x, y, x + p, y + p))
    if rng.random() < cfg.pixelation_prob:
        s = int(rng.integers(cfg.pixelation_min_side, min(cfg.pixelation_max_side, p - 1) + 1))
        patch = patch.resize((s, s), Image.BOX).resize((p, p), Image.BILINEAR)
    arr = np.asarray(patch, np.float32) @ PROJECTION.T
    arr -= arr.mean(axis=(0, 1))
    arr *= cfg.patch_rms / max(np.sqrt((arr**2).mean()), 1e-6)
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


def pil_grid(paths: list[Path], cfg: PretrainConfig, rng: np.random.Generator) -> tuple[Image.Image, tuple[int, int]]:
    """A decoded random image and a random grid origin on it."""
    img = Image.open(paths[rng.integers(len(paths))]).convert("RGB")
    j, extent = cfg.jitter, grid_extent(cfg.patch_size, cfg.gap, cfg.jitter)
    return img, (int(rng.integers(j, img.width - extent + j + 1)), int(rng.integers(j, img.height - extent + j + 1)))


def pil_reference_pairs(paths: list[Path], cfg: PretrainConfig, n: int, seed: int = 0) -> float:
    """The recipe written the obvious way: one PIL image and one pair per sample."""
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for _ in range(n):
        img, origin = pil_grid(paths, cfg, rng)
        first, second, _label = NEIGHBOUR_PAIRS[rng.integers(len(NEIGHBOUR_PAIRS))]
        _pair = [pil_patch(img, cell, origin, cfg, rng) for cell in (first, second)]
    return n / (time.perf_counter() - t0)


def pil_grid_reference_pairs(paths: list[Path], cfg: PretrainConfig, n: int, seed: int = 0) -> float:
    """The recipe with PIL, one grid per sample: one decode, 9 crops and 9 augmentations
    shared by the grid's ``pairs_per_grid`` pairs (what the vectorised sampler does)."""
    rng = np.random.default_rng(seed)
    made = 0
    t0 = time.perf_counter()
    while made < n:
        img, origin = pil_grid(paths, cfg, rng)
        chosen = NEIGHBOUR_PAIRS[rng.permutation(len(NEIGHBOUR_PAIRS))[: cfg.pairs_per_grid]]
        stacked = torch.stack([pil_patch(img, cell, origin, cfg, rng) for cell in range(9)])
        _first, _second = stacked[chosen[:, 0]], stacked[chosen[:, 1]]
        made += len(chosen)
    return made / (time.perf_counter() - t0)


def sampler_pairs(sampler: PairSampler, batches: int) -> float:
    sampler.batch(0)  # warm caches
    t0 = time.perf_counter()
    for step in range(1, batches + 1):
        sampler.batch(step)
    return batches * sampler.batch_size / (time.perf_counter() - t0)


def trainer_pairs(cfg: PretrainConfig, sampler: PairSampler, amp: bool, steps: int = 8) -> tuple[float, float]:
    """(pairs/s, FLOP/s) of training steps on a ready batch, laid out as the trainer does (channels_last)."""
    model = build_model(cfg).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batch = sampler.batch(0)
    patches = batch.patches.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(patches, batch.pair_index).float(), batch.labels)
        opt.zero_grad()
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    dt = (time.perf_counter() - t0) / steps
    return sampler.batch_size / dt, flops / dt


def gemm_peak(dtype: torch.dtype, reps: int = 6) -> float:
    """Best FLOP/s of square matrix products over a few sizes (the machine's attainable peak)."""
    best = 0.0
    for n in (1024, 2048, 3072, 4096):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", default=str(ROOT / "data/synth/JPEGImages"))
    ap.add_argument("--pairs", type=int, default=12800)
    args = ap.parse_args()
    cfg = PretrainConfig(batch_size=1280, pairs_per_grid=40)  # params.yaml
    paths = sorted(Path(args.images).glob("*.jpg"))[:1000]
    if not paths:
        raise SystemExit(f"no .jpg in {args.images}: run `ctx synth` first")
    images = usable_images(paths, cfg)
    cold_sampler = PairSampler(images, cfg.model_copy(update={"image_cache_mb": 0}))
    sampler = PairSampler(images, cfg)
    threads = torch.get_num_threads()

    ref = pil_reference_pairs(paths, cfg, max(256, args.pairs // 8))
    ref_grid = pil_grid_reference_pairs(paths, cfg, args.pairs)
    torch.set_num_threads(1)  # a DataLoader worker's share
    cold = sampler_pairs(cold_sampler, max(2, args.pairs // cfg.batch_size))
    for i in range(len(images.paths)):  # steady state of a run: every image decoded once, then cached
        sampler.image(i)
    fast = sampler_pairs(sampler, max(2, args.pairs // cfg.batch_size))
    torch.set_num_threads(threads)
    train32, flops32 = trainer_pairs(cfg, sampler, amp=False)
    train16, flops16 = trainer_pairs(cfg, sampler, amp=True)
    peak32, peak16 = gemm_peak(torch.float32), gemm_peak(torch.bfloat16)

    print(f"threads {threads}; compact tower, {cfg.patch_size}-px patches, batch {cfg.batch_size} "
          f"({cfg.batch_size // cfg.pairs_per_grid} grids of {cfg.pairs_per_grid} pairs)")
    print(f"1. sampler (1 thread)      {fast:9.0f} pairs/s   per-sample PIL reference {ref:7.0f} pairs/s   ratio {fast / ref:5.1f}x (goal >= 10x)")
    print(f"   the same, every image decoded each time (image_cache_mb: 0) {cold:7.0f} pairs/s   ratio {cold / ref:5.1f}x")
    print(f"   PIL sharing each grid's decode and patches {ref_grid:7.0f} pairs/s   sampler / it {fast / ref_grid:5.1f}x cached, "
          f"{cold / ref_grid:5.1f}x uncached")
    print(f"2. trainer consumes fp32   {train32:9.0f} pairs/s   bf16 autocast {train16:7.0f} pairs/s")
    print(f"   sampler / trainer       {fast / train32:9.1f}x fp32   {fast / train16:5.1f}x bf16 (goal >= 5x)")
    print(f"3. GEMM peak               {peak32 / 1e9:9.0f} GFLOP/s fp32   {peak16 / 1e9:7.0f} GFLOP/s bf16")
    print(f"   training                {flops32 / 1e9:9.0f} GFLOP/s fp32 = MFU {flops32 / peak32:5.1%} (goal >= 50 %)")
    print(f"                           {flops16 / 1e9:9.0f} GFLOP/s bf16 = MFU {flops16 / peak16:5.1%} of the bf16 peak")


if __name__ == "__main__":
    main()
