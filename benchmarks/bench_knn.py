"""Nearest neighbours and extraction speed.

1. Correlation top-k: ``ctx_core.knn.topk_correlation`` (chunked
   matrix products in torch) against SciPy brute force (``cdist(...,
   'correlation')`` + ``argpartition``), same queries and candidates in one
   run, results checked equal (goal: >= 20x).
2. Extraction: patches/s of the compact tower (fc6, bf16 autocast and float32)
   on 32-px patches, and of raw pixels, through the same embedders
   ``ctx extract`` uses.

    .venv/bin/python benchmarks/bench_knn.py [--queries 1000 --candidates 50000 --dim 512 --k 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.spatial.distance import cdist

from ctx_core.features.encoders import raw_pixel_embedder, tower_embedder
from ctx_core.knn import topk_correlation
from ctx_core.models.towers import build_tower


def scipy_topk(q: np.ndarray, c: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sim = 1.0 - cdist(q, c, "correlation")
    part = np.argpartition(-sim, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(sim, part, 1), axis=1)
    rows = np.take_along_axis(part, order, 1)
    return np.take_along_axis(sim, rows, 1), rows


def bench_topk(n_q: int, n_c: int, dim: int, k: int, chunk: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    q, c = torch.randn(n_q, dim, generator=gen), torch.randn(n_c, dim, generator=gen)
    t0 = time.perf_counter()
    ref_s, ref_r = scipy_topk(q.numpy().astype(np.float64), c.numpy().astype(np.float64), k)
    t_scipy = time.perf_counter() - t0
    t0 = time.perf_counter()
    s, r = topk_correlation(q, ((i, c[i:i + chunk]) for i in range(0, n_c, chunk)), k, n_c)
    t_torch = time.perf_counter() - t0
    same_rows = float((r.numpy() == ref_r).mean())
    max_diff = float(np.abs(s.numpy() - ref_s).max())
    return {"scipy_s": t_scipy, "torch_s": t_torch, "speedup": t_scipy / t_torch, "same_rows": same_rows,
            "max_score_diff": max_diff}


def bench_extract(n: int, batch: int) -> dict[str, float]:
    x = torch.randn(n, 3, 32, 32) * 50
    out = {}
    tower = build_tower("compact", 32)
    for name, emb in (("compact_fc6_bf16", tower_embedder("a", tower, "fc6", torch.device("cpu"), True)),
                      ("compact_fc6_fp32", tower_embedder("b", tower, "fc6", torch.device("cpu"), False)),
                      ("raw_pixels", raw_pixel_embedder(8))):
        emb.embed(x[:batch])  # warm-up: kernel selection
        t0 = time.perf_counter()
        for b in range(0, n, batch):
            emb.embed(x[b:b + batch])
        out[name] = n / (time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--candidates", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--chunk", type=int, default=8192)
    ap.add_argument("--patches", type=int, default=8192)
    args = ap.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    r = bench_topk(args.queries, args.candidates, args.dim, args.k, args.chunk)
    print(f"top-{args.k}, {args.queries} queries x {args.candidates} candidates x {args.dim} dims:")
    print(f"  scipy cdist brute force {r['scipy_s']:.2f} s; chunked torch {r['torch_s']:.3f} s; "
          f"speed-up {r['speedup']:.1f}x; same rows {r['same_rows']:.4%}; max score diff {r['max_score_diff']:.1e}")
    for name, rate in bench_extract(args.patches, 512).items():
        print(f"  extraction {name}: {rate:,.0f} patches/s")


if __name__ == "__main__":
    main()
