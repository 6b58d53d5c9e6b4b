"""Which step settings pay on this CPU (issue 17, item 2): each option against the default, in one run.

Pretraining (the default task and batch, the trainer's own ``task.method(...).step`` plus AdamW, a ready
batch, median of ``--steps`` steps after two warm-up steps):

- memory format: the trainer's channels_last against NCHW;
- ``torch.compile`` of the network (inductor's CPU backend): its compile seconds, then the step;
- intra-op threads: all cores (the default) against one;
- bf16 autocast against fp32, only where oneDNN has native bf16 (AMX or AVX512-BF16; emulated it is
  ~14x slower, ``benchmarks/bench_precision.py``).

Detection (the default ``detection`` params, ``scratch`` init, a training step of ``batch_size`` images):
the box head's RoI pooling, ours (``ctx_core/detection/roi_pool.py``) against torchvision's
``MultiScaleRoIAlign``; bf16 autocast against fp32 where native.

Whole stage: ``ctx pretrain`` for ``--stage-steps`` steps with the sampler in a DataLoader worker
(``pretrain.workers: 1``, the default) against in the trainer (``workers: 0``): the pairs/s it writes.

    .venv/bin/python benchmarks/bench_step_options.py [--steps 6] [--stage-steps 40]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ctx_core.config import load_params
from ctx_core.distributed import cpu_has_native_bf16
from ctx_core.pretext.data import usable_images
from ctx_core.pretext.tasks import get_task
from ctx_core.pretext.train import build_optimizer
from cpu import cpu_model  # benchmarks/cpu.py (scripts run from benchmarks/)
from profile_steps import scratch_detector

ROOT = Path(__file__).resolve().parent.parent
LOCAL = type("Env", (), {"rank": 0, "world": 1})()


def median_seconds(step, steps: int) -> float:
    for s in range(2):
        step(s)
    times = []
    for s in range(2, 2 + steps):
        t = time.perf_counter()
        step(s)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def pretrain_step_seconds(steps: int, *, channels_last: bool = True, compile: bool = False, threads: int | None = None,
                          amp: bool = False) -> tuple[float, float]:
    """(median seconds a step, compile seconds) for the default task's step under these options."""
    cfg = load_params(ROOT / "params.yaml").params.pretrain.model_copy(update={"workers": 0, "amp": amp})
    task = get_task(cfg.task)
    paths = sorted((ROOT / "data/synth/JPEGImages").glob("*.jpg"))[:1000]
    sampler = task.sampler(usable_images(paths, cfg, task.min_side(cfg)), cfg)
    batches = [sampler.batch(s) for s in range(2 + steps)]
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        torch.manual_seed(0)
        model = task.model(cfg)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        model.train()
        opt = build_optimizer(model, cfg)
        method = task.method(sampler, cfg, LOCAL, torch.device("cpu"))
        if not channels_last:  # the trainer's step makes patches channels_last; the plain context step here
            if cfg.task != "context":
                raise SystemExit("the NCHW row is written for the context task")

            def nchw_step(net, step, batch):
                logits = net(batch.patches.contiguous(), batch.pair_index)
                torch.nn.functional.cross_entropy(logits, batch.labels).backward()
            method.step = nchw_step
        net = torch.compile(model) if compile else model
        compile_seconds = 0.0
        if compile:
            t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            method.step(net, 0, batches[0])
            compile_seconds = time.perf_counter() - t

        def step(s: int) -> None:
            opt.zero_grad(set_to_none=True)
            method.step(net, s, batches[s])
            opt.step()
        return median_seconds(step, steps), compile_seconds
    finally:
        torch.set_num_threads(before)


def detection_step_seconds(steps: int, *, torchvision_roi: bool = False, amp: bool = False) -> float:
    from torchvision.ops import MultiScaleRoIAlign

    cfg, data, model, opt = scratch_detector()
    if torchvision_roi:
        model.roi_heads.box_roi_pool = MultiScaleRoIAlign(featmap_names=["0"], output_size=cfg.roi_size,
                                                          sampling_ratio=2)
    batches = [data.batch(s) for s in range(2 + steps)]

    def step(s: int) -> None:
        images, targets = batches[s]
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            losses = model(images, targets)
        sum(losses.values()).backward()
        opt.step()
    return median_seconds(step, steps)


def stage_pairs_per_second(workers: int, steps: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [str(Path(sys.executable).parent / "ctx"), "pretrain", "--set", f"pretrain.out={tmp}/m",
             "--set", f"pretrain.reports={tmp}/r", "--set", "tracking.enabled=false",
             "--set", f"pretrain.steps={steps}", "--set", f"pretrain.workers={workers}",
             "--set", "pretrain.warmup_steps=5", "--set", "pretrain.audit_images=0",
             "--set", "pretrain.diagnostic_steps=0", "--set", "pretrain.eval_pairs=1024"],
            cwd=ROOT, check=True, capture_output=True)
        return json.loads((Path(tmp) / "r/metrics.json").read_text())["pairs_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per option (after 2 warm-up steps)")
    parser.add_argument("--stage-steps", type=int, default=40, help="steps of each whole `ctx pretrain` run")
    args = parser.parse_args()
    native = cpu_has_native_bf16()
    print(f"CPU: {cpu_model()}; native bf16 (AMX or AVX512-BF16): {native}; {torch.get_num_threads()} threads; "
          f"torch {torch.__version__}\n")

    rows = []
    base, _ = pretrain_step_seconds(args.steps)
    rows.append(("pretrain step: default (fp32, channels_last, all threads)", base, None))
    rows.append(("pretrain step: NCHW", pretrain_step_seconds(args.steps, channels_last=False)[0], None))
    step, compile_s = pretrain_step_seconds(args.steps, compile=True)
    rows.append((f"pretrain step: torch.compile (after {compile_s:.0f} s compiling)", step, None))
    rows.append(("pretrain step: 1 intra-op thread", pretrain_step_seconds(args.steps, threads=1)[0], None))
    if native:
        rows.append(("pretrain step: bf16 autocast", pretrain_step_seconds(args.steps, amp=True)[0], None))
    print("| option | s a step | default / option |\n| --- | ---: | ---: |")
    for name, s, _ in rows:
        print(f"| {name} | {s:.3f} | {base / s:.2f}x |")
    if not native:
        print("| pretrain step: bf16 autocast | not run: no native bf16 (emulated, ~14x slower) | |")

    det = detection_step_seconds(args.steps)
    print(f"| detection step: default (ours RoI pooling, fp32) | {det:.3f} | 1.00x |")
    tv = detection_step_seconds(args.steps, torchvision_roi=True)
    print(f"| detection step: torchvision MultiScaleRoIAlign | {tv:.3f} | {det / tv:.2f}x |")
    if native:
        amp = detection_step_seconds(args.steps, amp=True)
        print(f"| detection step: bf16 autocast | {amp:.3f} | {det / amp:.2f}x |")
    else:
        print("| detection step: bf16 autocast | not run: no native bf16 | |")

    w1 = stage_pairs_per_second(1, args.stage_steps)
    w0 = stage_pairs_per_second(0, args.stage_steps)
    print(f"\n`ctx pretrain`, {args.stage_steps} steps: sampler in a DataLoader worker (default) {w1:,.0f} pairs/s; "
          f"in the trainer {w0:,.0f} pairs/s (worker / trainer {w1 / w0:.2f}x)")


if __name__ == "__main__":
    main()
