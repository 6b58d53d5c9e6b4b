"""Where a training step's time goes, before anything is changed (the CPU-speed issue's first step).

One pretraining step (default params: the task's sampler, tower forward, head and loss,
backward, optimizer) and one detection step (default ``detection`` params, ``scratch``
init: backbone, RPN, RoI heads, backward, optimizer), each phase timed with
``torch.profiler.record_function`` over ``--steps`` steps after one warm-up step, plus the
profiler's top operators by self CPU time. fp32 (the CPU's native-bf16 check decides
autocast in runs; this script says what it found).

    .venv/bin/python benchmarks/profile_steps.py [--steps 3] [--task context]
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile, record_function

from ctx_core.config import load_params
from ctx_core.distributed import cpu_has_native_bf16
from ctx_core.pretext.data import usable_images
from ctx_core.pretext.tasks import get_task
from ctx_core.pretext.train import build_optimizer
from cpu import cpu_model  # benchmarks/cpu.py (scripts run from benchmarks/)

ROOT = Path(__file__).resolve().parent.parent



class Phases:
    """Wall seconds per named phase, summed over the timed steps."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t = time.perf_counter()
        with record_function(name):
            yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t

    def table(self, steps: int) -> str:
        total = sum(self.seconds.values())
        rows = [f"| {k} | {1000 * v / steps:.0f} | {100 * v / total:.0f} % |" for k, v in self.seconds.items()]
        return "\n".join(["| phase | ms a step | share |", "| --- | ---: | ---: |", *rows,
                          f"| all | {1000 * total / steps:.0f} | |"])


def top_ops(prof, n: int = 8) -> str:
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=n, max_name_column_width=40)


def pretrain_profile(task_name: str, steps: int) -> None:
    cfg = load_params(ROOT / "params.yaml").params.pretrain.model_copy(update={"task": task_name, "workers": 0})
    task = get_task(task_name)
    paths = sorted((ROOT / "data/synth/JPEGImages").glob("*.jpg"))[:1000]
    sampler = task.sampler(usable_images(paths, cfg, task.min_side(cfg)), cfg)
    model = task.model(cfg).to(memory_format=torch.channels_last)
    model.train()
    opt = build_optimizer(model, cfg)
    phases = Phases()

    def step(s: int, timed: Phases | None) -> None:
        ph = timed or (lambda name: contextlib.nullcontext())
        with ph("data: sampler batch (in the trainer here; a worker in runs)"):
            batch = sampler.batch(s)
        opt.zero_grad(set_to_none=True)
        if task_name == "context":
            patches = batch.patches.contiguous(memory_format=torch.channels_last)
            with ph("tower forward"):
                feats = model.tower(patches)
            with ph("head forward + loss"):
                pairs = torch.cat([feats[batch.pair_index[:, 0]], feats[batch.pair_index[:, 1]]], dim=1)
                loss = F.cross_entropy(model.head(pairs), batch.labels)
            with ph("backward"):
                loss.backward()
        else:
            with ph("forward + loss + backward (the task's step)"):
                task.method(sampler, cfg, type("E", (), {"rank": 0, "world": 1})(), torch.device("cpu")).step(
                    model, s, batch)
        with ph("optimizer"):
            opt.step()

    step(0, None)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for s in range(1, steps + 1):
            step(s, phases)
    print(f"\n### pretrain, task {task_name}: {cfg.tower_passes} tower passes a step, {steps} steps\n")
    print(phases.table(steps))
    print("\n```\n" + top_ops(prof) + "```")


def scratch_detector():
    """The default ``detection`` params' training set and a ``scratch`` Faster R-CNN in train mode, with its SGD."""
    from ctx_core.detection.data import TrainingSet, calibration_images, input_statistics
    from ctx_core.detection.model import build_detector, he_init
    from ctx_core.models.towers import build_tower
    from ctx_core.store.labelled import read_detection_split

    settings = load_params(ROOT / "params.yaml")
    cfg, pre = settings.params.detection, settings.params.pretrain
    split = read_detection_split(settings.path(cfg.input), cfg.train_split)
    classes = list(split.classes)
    data = TrainingSet(split.images, classes, cfg.batch_size, 0, cfg.hflip, cfg.train_difficult)
    mean, std = input_statistics(calibration_images(split.images, cfg.calibration_images, 0))
    torch.manual_seed(1)
    model = build_detector(build_tower(pre.arch, pre.patch_size), cfg, len(classes), mean, std)
    he_init(model.backbone.trunk, 0)
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    return cfg, data, model, opt


def detection_profile(steps: int) -> None:
    cfg, data, model, opt = scratch_detector()
    phases = Phases()
    for name in ("backbone", "rpn", "roi_heads"):
        module = getattr(model, name)
        original = module.forward

        def timed(*a, _original=original, _name=name, **k):
            with phases(f"{_name} forward"):
                return _original(*a, **k)
        module.forward = timed

    def step(s: int) -> None:
        with phases("data: batch"):
            images, targets = data.batch(s)
        opt.zero_grad(set_to_none=True)
        losses = model(images, targets)
        with phases("backward"):
            sum(losses.values()).backward()
        with phases("optimizer"):
            opt.step()

    step(0)
    phases.seconds.clear()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for s in range(1, steps + 1):
            step(s)
    print(f"\n### detection step: {cfg.batch_size} images, scratch init, {steps} steps "
          "(the forward phases nest: torchvision's transform and loss glue are outside them)\n")
    print(phases.table(steps))
    print("\n```\n" + top_ops(prof) + "```")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--task", default="context")
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}; native bf16 (AMX or AVX512-BF16): {cpu_has_native_bf16()}; "
          f"{torch.get_num_threads()} threads; torch {torch.__version__}; fp32")
    pretrain_profile(args.task, args.steps)
    detection_profile(args.steps)


if __name__ == "__main__":
    main()
