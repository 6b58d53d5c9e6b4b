"""Synthetic benchmark generation speed (issue: >= 100 images/s per core at 192 px).

Measured in one run against a reference on the same machine: the cost of only
encoding and writing a 192-px JPEG of noise (the I/O floor every generator
pays), so the ratio is stable on a shared, noisy machine.

    .venv/bin/python benchmarks/bench_synth.py [--images 600]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ctx_core.config import load_params
from ctx_core.synth.run import run_synth

ROOT = Path(__file__).resolve().parent.parent


def synth_rate(images: int, workers: int, tmp: Path) -> float:
    settings = load_params(
        ROOT / "params.yaml",
        [f"data.synth.images={images}", f"data.synth.workers={workers}", "data.synth.size=192",
         f"data.synth.out={tmp / f'out{workers}'}", f"data.synth.reports={tmp / f'rep{workers}'}",
         "tracking.enabled=false"],
    )
    t0 = time.perf_counter()
    run_synth(settings, progress=False)
    return images / (time.perf_counter() - t0)


def encode_floor_rate(images: int, tmp: Path) -> float:
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (144, 192, 3), dtype=np.uint8) for _ in range(16)]
    t0 = time.perf_counter()
    for i in range(images):
        Image.fromarray(arrays[i % 16]).save(tmp / f"f{i}.jpg", quality=90)
    return images / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=600)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        floor = encode_floor_rate(args.images, tmp)
        one = synth_rate(args.images, 1, tmp)
        allc = synth_rate(args.images * cores, cores, tmp)
    print(f"synth, 1 process:       {one:8.1f} images/s  (goal >= 100 per core)")
    print(f"synth, {cores} processes:     {allc:8.1f} images/s  ({allc / one:.2f}x of 1 process)")
    print(f"JPEG encode+write only: {floor:8.1f} images/s  (synth costs {floor / one:.1f}x the I/O floor)")


if __name__ == "__main__":
    main()
