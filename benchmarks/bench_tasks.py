"""Every pretext task's data path against its trainer, in one run (issue 15's goal: the
sampler makes batches >= 5x as fast as the trainer consumes them, so data never waits).

For each task of ``ctx_core.pretext.tasks`` with the default params (the same tower and
``pretrain.tower_passes`` patches per step for all):

1. the sampler's batches/s in one thread (a DataLoader worker's share), images decoded
   once and cached, as in a run once every image has been seen;
2. the trainer's steps/s on a ready batch (forward, backward and AdamW step) with the
   machine's threads, fp32 (and bf16 autocast where the CPU has native bf16);
3. their ratio.

    .venv/bin/python benchmarks/bench_tasks.py [--images data/synth/JPEGImages] [--steps 6]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ctx_core.config import load_params
from ctx_core.distributed import Distributed, cpu_has_native_bf16
from ctx_core.pretext.data import usable_images
from ctx_core.pretext.tasks import TASKS, get_task
from ctx_core.pretext.train import build_optimizer
from cpu import cpu_model  # benchmarks/cpu.py (scripts run from benchmarks/)

ROOT = Path(__file__).resolve().parent.parent



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default=str(ROOT / "data/synth/JPEGImages"))
    parser.add_argument("--limit", type=int, default=1000, help="images used (decoded and cached first)")
    parser.add_argument("--steps", type=int, default=6, help="timed batches / steps per task")
    parser.add_argument("--tasks", nargs="*", default=list(TASKS))
    args = parser.parse_args()
    base = load_params(ROOT / "params.yaml").params.pretrain
    paths = sorted(Path(args.images).glob("*.jpg"))[: args.limit] or sorted(Path(args.images).glob("*.png"))[: args.limit]
    threads = torch.get_num_threads()
    print(f"CPU: {cpu_model()}; native bf16: {cpu_has_native_bf16()}; {threads} threads; torch {torch.__version__}; "
          f"{len(paths)} images from {args.images}; tower {base.arch}, {base.patch_size}-px patches, "
          f"{base.tower_passes} tower passes a step")
    print("| task | batch | sampler batches/s (1 thread) | trainer steps/s fp32 | sampler / trainer |")
    print("| --- | --- | ---: | ---: | ---: |")
    device = torch.device("cpu")
    for name in args.tasks:
        cfg = base.model_copy(update={"task": name, "amp": False, "workers": 0})
        task = get_task(name)
        images = usable_images(paths, cfg, task.min_side(cfg))
        sampler = task.sampler(images, cfg)
        for i in range(len(images.paths)):  # fill the cache as a run does once every image was seen
            sampler.image(i)
        torch.set_num_threads(1)
        sampler.batch(0)
        t = time.perf_counter()
        batches = [sampler.batch(s) for s in range(1, args.steps + 1)]
        sample_rate = args.steps / (time.perf_counter() - t)
        torch.set_num_threads(threads)
        model = task.model(cfg).to(memory_format=torch.channels_last)
        model.train()
        opt = build_optimizer(model, cfg)
        method = task.method(sampler, cfg, Distributed(), device)

        def step(b) -> None:
            opt.zero_grad(set_to_none=True)
            method.step(model, b.step, b)
            opt.step()

        step(batches[0])
        t = time.perf_counter()
        for b in batches:
            step(b)
        train_rate = len(batches) / (time.perf_counter() - t)
        print(f"| {name} | {sampler.batch_size} {task.unit} | {sample_rate:.2f} | {train_rate:.2f} | "
              f"**{sample_rate / train_rate:.1f}x** |")


if __name__ == "__main__":
    main()
