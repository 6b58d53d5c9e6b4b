"""Ingestion speed: images/s with all cores against one process, in one run.

The source is a synthetic VOC root at ``--size`` px (default 512: about 196K
pixels per image, so every image is decoded, downscaled to the 20K-40K pixel
budget, re-encoded, and its boxes rescaled). Each rate is the whole
``run_ingest`` call: scan, hash, decode, write, parquet tables, DVC hash.

    .venv/bin/python benchmarks/bench_ingest.py [--images 400] [--size 512]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from ctx_core.config import load_params
from ctx_core.ingest.run import run_ingest
from ctx_core.synth.run import run_synth

ROOT = Path(__file__).resolve().parent.parent


def ingest_rate(source: Path, workers: int, tmp: Path) -> tuple[float, int]:
    settings = load_params(
        ROOT / "params.yaml",
        [f"data.ingest.source={source}", f"data.ingest.out={tmp / f'store{workers}'}",
         f"data.ingest.reports={tmp / f'rep{workers}'}", f"data.ingest.workers={workers}", "tracking.enabled=false"],
    )
    t0 = time.perf_counter()
    result = run_ingest(settings, progress=False)
    return len(result.ingested) / (time.perf_counter() - t0), result.metrics["resized"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        source = tmp / "voc"
        run_synth(load_params(ROOT / "params.yaml", [
            f"data.synth.out={source}", f"data.synth.reports={tmp / 'synth-reports'}", f"data.synth.images={args.images}",
            f"data.synth.size={args.size}", "tracking.enabled=false"]), progress=False)
        ingest_rate(source, 1, tmp / "warm")  # page cache and imports, not measured
        one, resized = ingest_rate(source, 1, tmp)
        allc, _ = ingest_rate(source, cores, tmp)
    print(f"ingest {args.images} VOC images at {args.size} px ({resized:.0f} downscaled)")
    print(f"  1 process:      {one:8.1f} images/s")
    print(f"  {cores} processes:    {allc:8.1f} images/s  ({allc / one:.2f}x of 1 process)")


if __name__ == "__main__":
    main()
