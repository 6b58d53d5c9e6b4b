"""Pretraining speed, as ratios measured in one run (the machine is shared and noisy).

1. Sampler pairs/s: the vectorised ``PairSampler`` (decoded images cached, as
   in a run once every image has been seen; also without the cache) against a
   straightforward per-sample PIL implementation of the same recipe (goal >= 10x):
   one decode and one pair per sample, as a map-style Dataset's ``__getitem__``
   would do; and, stricter, against PIL code that also shares each grid's
   decode and patches among its pairs (one grid per sample).
2. Sampler pairs/s (one process) against the pairs/s the trainer consumes
   (forward + backward + SGD step on ready batches; goal >= 5x, so data never waits).
3. Training model-FLOP utilisation: FLOPs of a step (``torch.utils.flop_counter``,
   which counts the convolutions and matrix products, forward and backward) per
   second against the *layer peak* measured in this process: every Conv2d and Linear
   the step runs (the tower's five convolutions and fc6, the pair head's three
   Linear layers), each timed alone, forward + backward (weight gradient, and input
   gradient where the step needs one: not for conv1, whose input is the data), at
   exactly the shape, dtype (autocast), memory layout (channels_last) and batch it
   sees in the step, after a warm-up; its FLOPs counted by ``flop_counter`` too.
   The load on a shared machine drifts, so the step and the layers are timed in
   interleaved rounds (``--steps``: one step, then each layer twice back to back,
   the second timed, its data hot in cache as in the step); a layer keeps
   its best round, the step its mean. Layer peak = the layers' FLOPs / the sum of
   their best times: the attainable rate for exactly this mix of shapes. The
   utilisation (step FLOP/s / layer peak = the layers' best times / the step's
   time) is the share of a step spent in conv/linear work at that rate; the rest
   (BN, ReLU, pooling, indexing, loss, optimizer, allocation, framework overhead)
   adds no counted FLOPs, so it is at most 100 % (goal >= 50 % for ``compact`` in
   fp32 on the CPU; a figure above 100 % is flagged as a broken measure). A
   per-layer table shows which shapes are slow.

   The GEMM peak (best single square matrix product, 1,024-4,096) and the ratio to
   it are printed as well, as secondary figures. That ratio is not a utilisation
   and can exceed 100 % (154 % on the 2-core AMX CPU of docs/BENCHMARKS.md):
   ``flop_counter`` counts nominal direct-convolution FLOPs, and a square GEMM is
   a different kind of work from oneDNN's kernels for the tower's small 3x3
   convolutions, so its measured rate does not bound theirs (whether oneDNN does
   fewer multiplications than the nominal count or only runs better-blocked
   kernels for these shapes, this script does not tell).

   bf16 autocast (training, layer peak and GEMM peak) is measured only when
   ``ctx_core.distributed.cpu_has_native_bf16()`` says the CPU has bf16 kernels
   (AVX512-BF16 or AMX), as the trainer decides; elsewhere bf16 is emulated and
   about 14x slower, so it is skipped and the output says so.

    .venv/bin/python benchmarks/bench_pretrain.py [--images data/synth] [--pairs 12800]
                     [--steps 8] [--reps 6] [--quick]

``--quick`` (a smoke run, under a minute with one thread): 1,280 pairs, 3 rounds,
GEMMs of 1,024 and 2,048 best of 2; its numbers are not for the record.
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ctx_core.config import PretrainConfig
from ctx_core.distributed import cpu_has_native_bf16
from ctx_core.pretext.data import PairSampler, usable_images
from ctx_core.pretext.grid import NEIGHBOUR_PAIRS, grid_extent
from ctx_core.pretext.train import build_model
from cpu import cpu_model  # benchmarks/cpu.py (scripts run from benchmarks/)

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


@dataclass
class LayerInput:
    """What one Conv2d / Linear of the model receives in a training step."""

    name: str
    module: nn.Module
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype
    requires_grad: bool


@dataclass
class LayerRun:
    """One layer timed alone, forward + backward, at its step shape."""

    name: str
    what: str
    shape: str
    flops: int
    seconds: float  # best of the rounds


@dataclass
class Training:
    pairs_per_s: float
    flops_per_s: float  # the step's flop_counter FLOPs / its mean time
    step_flops: int
    layers: list[LayerRun]

    @property
    def layer_peak(self) -> float:
        """FLOP/s of the step's conv/linear layers each timed alone: sum of FLOPs / sum of best times."""
        return sum(r.flops for r in self.layers) / sum(r.seconds for r in self.layers)


def describe(layer: LayerInput) -> tuple[str, str]:
    m = layer.module
    if isinstance(m, nn.Conv2d):
        what = f"conv {m.kernel_size[0]}x{m.kernel_size[1]}/{m.stride[0]} {m.in_channels}->{m.out_channels}"
    else:
        what = f"linear {m.in_features}->{m.out_features}"
    shape = "x".join(map(str, layer.shape))
    if len(layer.shape) == 4 and layer.stride == torch.empty(layer.shape).to(memory_format=torch.channels_last).stride():
        shape += " cl"
    return what, shape


class IsolatedLayer:
    """A copy of one layer with a random input of the step's shape, strides and dtype: ``run()``
    is its forward + backward (weight grad; input grad where the step needs one) under the
    step's autocast; ``flops`` by ``flop_counter``."""

    def __init__(self, layer: LayerInput, amp: bool):
        self.layer, self.amp = layer, amp
        self.module = copy.deepcopy(layer.module)
        self.x = torch.empty_strided(layer.shape, layer.stride, dtype=layer.dtype).normal_()
        self.x.requires_grad_(layer.requires_grad)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            self.grad = torch.randn_like(self.module(self.x))
        with FlopCounterMode(display=False) as counter:
            self.run()  # also the warm-up
        self.flops = counter.get_total_flops()
        self.best = float("inf")

    def run(self) -> None:
        self.module.zero_grad(set_to_none=True)
        self.x.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.amp):
            out = self.module(self.x)
        out.backward(self.grad)

    def time(self) -> None:
        """One untimed run, then one timed: in the step a layer's input and output gradient
        were just written by the op before it (hot in cache); here they would be cold."""
        self.run()
        t0 = time.perf_counter()
        self.run()
        self.best = min(self.best, time.perf_counter() - t0)

    def result(self) -> LayerRun:
        return LayerRun(self.layer.name, *describe(self.layer), self.flops, self.best)


def trainer_pairs(cfg: PretrainConfig, sampler: PairSampler, amp: bool, steps: int = 8) -> Training:
    """Training steps on a ready batch, laid out as the trainer does (channels_last): pairs/s and
    FLOP/s (mean over ``steps``), and each of the step's Conv2d / Linear layers timed alone.

    The load on a shared machine drifts, so the two are interleaved: each round times one
    step, then each layer once (after an untimed run); a layer keeps its best round, the step
    its mean."""
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

    seen: list[LayerInput] = []

    def record(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            x = args[0]
            seen.append(LayerInput(name, module, tuple(x.shape), tuple(x.stride()), x.dtype, x.requires_grad))
        return hook

    hooks = [m.register_forward_pre_hook(record(name)) for name, m in model.named_modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
    with FlopCounterMode(display=False) as counter:
        step()
    for h in hooks:
        h.remove()
    flops = counter.get_total_flops()
    layers = [IsolatedLayer(layer, amp) for layer in seen]
    for _ in range(2):
        step()
    total = 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        total += time.perf_counter() - t0
        for layer in layers:
            layer.time()
    dt = total / steps
    return Training(sampler.batch_size / dt, flops / dt, flops, [layer.result() for layer in layers])


def layer_table(runs: list[LayerRun], label: str) -> str:
    rows = [f"   {label:5} {'layer':16} {'op':24} {'input':20} {'GFLOP':>7} {'ms fwd+bwd':>11} {'GFLOP/s':>8}"]
    for r in runs:
        rows.append(f"   {'':5} {r.name:16} {r.what:24} {r.shape:20} {r.flops / 1e9:7.2f} "
                    f"{1e3 * r.seconds:11.1f} {r.flops / r.seconds / 1e9:8.0f}")
    flops, seconds = sum(r.flops for r in runs), sum(r.seconds for r in runs)
    rows.append(f"   {'':5} {'all':16} {'':24} {'':20} {flops / 1e9:7.2f} {1e3 * seconds:11.1f} {flops / seconds / 1e9:8.0f}")
    return "\n".join(rows)


def gemm_peak(dtype: torch.dtype, reps: int = 6, sizes: tuple[int, ...] = (1024, 2048, 3072, 4096)) -> float:
    """Best FLOP/s of one square matrix product over a few sizes, best of ``reps`` after a warm-up."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        for _ in range(reps):
            t0 = time.perf_counter()
            a @ b
            best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", default=str(ROOT / "data/synth/JPEGImages"))
    ap.add_argument("--pairs", type=int, default=None, help="sampler pairs timed (default 12800; --quick 1280)")
    ap.add_argument("--steps", type=int, default=None,
                    help="rounds of one timed training step and each layer alone once (default 8; --quick 3)")
    ap.add_argument("--reps", type=int, default=None, help="products per GEMM size, the best kept (default 6; --quick 2)")
    ap.add_argument("--quick", action="store_true", help="a smoke run (under a minute): few pairs, steps, reps and GEMM sizes")
    args = ap.parse_args()
    pairs = args.pairs or (1280 if args.quick else 12800)
    steps = args.steps or (3 if args.quick else 8)
    reps = args.reps or (2 if args.quick else 6)
    gemm_sizes = (1024, 2048) if args.quick else (1024, 2048, 3072, 4096)
    cfg = PretrainConfig(batch_size=1280, pairs_per_grid=40)  # params.yaml
    paths = sorted(Path(args.images).glob("*.jpg"))[:1000]
    if not paths:
        raise SystemExit(f"no .jpg in {args.images}: run `ctx synth` first")
    images = usable_images(paths, cfg)
    cold_sampler = PairSampler(images, cfg.model_copy(update={"image_cache_mb": 0}))
    sampler = PairSampler(images, cfg)
    threads = torch.get_num_threads()
    bf16 = cpu_has_native_bf16()

    ref = pil_reference_pairs(paths, cfg, max(256, pairs // 8))
    ref_grid = pil_grid_reference_pairs(paths, cfg, pairs)
    torch.set_num_threads(1)  # a DataLoader worker's share
    cold = sampler_pairs(cold_sampler, max(2, pairs // cfg.batch_size))
    for i in range(len(images.paths)):  # steady state of a run: every image decoded once, then cached
        sampler.image(i)
    fast = sampler_pairs(sampler, max(2, pairs // cfg.batch_size))
    torch.set_num_threads(threads)
    train32 = trainer_pairs(cfg, sampler, amp=False, steps=steps)
    gpeak32 = gemm_peak(torch.float32, reps, gemm_sizes)
    if bf16:
        train16 = trainer_pairs(cfg, sampler, amp=True, steps=steps)
        gpeak16 = gemm_peak(torch.bfloat16, reps, gemm_sizes)

    print(f"{cpu_model()}, threads {threads}, native bf16 {'yes' if bf16 else 'no'}"
          f"{' (--quick: a smoke run, not for the record)' if args.quick else ''}")
    print(f"compact tower, {cfg.patch_size}-px patches, batch {cfg.batch_size} "
          f"({cfg.batch_size // cfg.pairs_per_grid} grids of {cfg.pairs_per_grid} pairs); "
          f"{steps} rounds of a timed step and each layer alone (best kept), GEMMs best of {reps}")
    print(f"1. sampler (1 thread)      {fast:9.0f} pairs/s   per-sample PIL reference {ref:7.0f} pairs/s   ratio {fast / ref:5.1f}x (goal >= 10x)")
    print(f"   the same, every image decoded each time (image_cache_mb: 0) {cold:7.0f} pairs/s   ratio {cold / ref:5.1f}x")
    print(f"   PIL sharing each grid's decode and patches {ref_grid:7.0f} pairs/s   sampler / it {fast / ref_grid:5.1f}x cached, "
          f"{cold / ref_grid:5.1f}x uncached")
    no_bf16 = "bf16 skipped: no native bf16 on this CPU (emulated, ~14x slower; the trainer would not use it)"
    if bf16:
        print(f"2. trainer consumes fp32   {train32.pairs_per_s:9.0f} pairs/s   "
              f"bf16 autocast {train16.pairs_per_s:7.0f} pairs/s")
        print(f"   sampler / trainer       {fast / train32.pairs_per_s:9.1f}x fp32   "
              f"{fast / train16.pairs_per_s:5.1f}x bf16 (goal >= 5x)")
    else:
        print(f"2. trainer consumes fp32   {train32.pairs_per_s:9.0f} pairs/s   ({no_bf16})")
        print(f"   sampler / trainer       {fast / train32.pairs_per_s:9.1f}x fp32 (goal >= 5x)")
    print("3. the step's conv/linear layers alone, forward + backward, at their step shapes:")
    results = [("fp32", train32, gpeak32)] + ([("bf16", train16, gpeak16)] if bf16 else [])
    for label, train, _ in results:
        print(layer_table(train.layers, label))
    for label, train, gpeak in results:
        counted, lpeak = sum(r.flops for r in train.layers), train.layer_peak
        print(f"   {label}: step {train.step_flops / 1e9:.1f} GFLOP (flop_counter; the layers alone count "
              f"{counted / 1e9:.1f}), layer peak {lpeak / 1e9:.0f} GFLOP/s, GEMM peak {gpeak / 1e9:.0f} GFLOP/s")
        utilisation = train.flops_per_s / lpeak
        goal = " (goal >= 50 %)" if label == "fp32" else ""
        warn = "  ABOVE 100 %: the layer timings do not bound the step, the measure is wrong" if utilisation > 1 else ""
        print(f"   training {label}           {train.flops_per_s / 1e9:9.0f} GFLOP/s = "
              f"{utilisation:5.1%} of the layer peak{goal}{warn}")
        print(f"   (secondary) vs GEMM peak {train.flops_per_s / gpeak:5.1%}; layer peak / GEMM peak {lpeak / gpeak:5.1%} "
              f"(nominal conv FLOPs: can exceed 100 %)")
    if not bf16:
        print(f"   {no_bf16}")


if __name__ == "__main__":
    main()
