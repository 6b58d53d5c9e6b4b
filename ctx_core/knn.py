"""Normalised-correlation nearest neighbours by chunked matrix products.

Correlation of two vectors is the dot product of their standardised forms
(mean subtracted, unit L2 norm), so ``scipy``'s ``cdist(a, b, 'correlation')``
equals ``1 - standardise(a) @ standardise(b).T``. Candidates arrive in chunks
(one shard piece at a time) and queries in blocks, so memory is bounded by
``query_block x chunk`` whatever the number of features.
"""

from __future__ import annotations

from typing import Iterable

import torch

from ctx_core.errors import UserError


class TooFewCandidatesError(UserError):
    """More neighbours asked for than there are candidates."""


def standardise(x: torch.Tensor) -> torch.Tensor:
    """(N, D) -> float32 rows with mean 0 and L2 norm 1 (a constant row stays 0)."""
    x = x.float()
    x = x - x.mean(dim=1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def topk_correlation(
    queries: torch.Tensor,
    chunks: Iterable[tuple[int, torch.Tensor]],
    k: int,
    n_candidates: int,
    query_groups: torch.Tensor | None = None,
    candidate_groups: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` candidates most correlated with each query.

    ``queries`` (Q, D); ``chunks`` yields (global offset, (n, D)) and covers
    ``n_candidates`` rows in all. With ``query_groups`` (Q,) and
    ``candidate_groups`` (N,) int64, candidates of a query's own group (its
    image) are skipped; such a query may get fewer than ``k`` valid matches,
    padded with score ``-inf`` and row -1.

    Returns correlations (Q, k) float32, descending, and global rows (Q, k) int64.
    """
    if k > n_candidates:
        raise TooFewCandidatesError(f"k = {k} is larger than the number of candidates ({n_candidates}); ask for at most {n_candidates}")
    q = standardise(queries)
    best_s = torch.full((len(q), k), float("-inf"))
    best_r = torch.full((len(q), k), -1, dtype=torch.int64)
    for offset, chunk in chunks:
        sims = q @ standardise(chunk).T  # (Q, n)
        if query_groups is not None and candidate_groups is not None:
            own = query_groups[:, None] == candidate_groups[offset:offset + len(chunk)][None, :]
            sims.masked_fill_(own, float("-inf"))
        s, i = sims.topk(min(k, len(chunk)), dim=1)
        merged_s = torch.cat([best_s, s], dim=1)
        merged_r = torch.cat([best_r, i + offset], dim=1)
        best_s, pos = merged_s.topk(k, dim=1)
        best_r = merged_r.gather(1, pos)
    best_r[torch.isinf(best_s)] = -1
    return best_s, best_r


def best_per_group(
    queries: torch.Tensor,
    chunks: Iterable[tuple[int, torch.Tensor]],
    groups: torch.Tensor,
    n_groups: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query and each group (image), the best-correlated candidate.

    ``queries`` (Q, D); ``groups`` (N,) int64 in [0, n_groups) gives each
    candidate row's group. Returns correlations (Q, G) float32 (``-inf`` for a
    group with no candidate) and global rows (Q, G) int64 (-1 there).
    """
    q = standardise(queries)
    best_s = torch.full((len(q), n_groups), float("-inf"))
    best_r = torch.full((len(q), n_groups), -1, dtype=torch.int64)
    for offset, chunk in chunks:
        sims = q @ standardise(chunk).T  # (Q, n)
        g = groups[offset:offset + len(chunk)]
        idx = g[None, :].expand_as(sims)
        chunk_best = torch.full_like(best_s, float("-inf")).scatter_reduce(1, idx, sims, reduce="amax")
        # the row achieving each maximum: largest row index among ties, for determinism
        rows = torch.arange(offset, offset + len(chunk)).expand_as(sims)
        at_max = sims == chunk_best.gather(1, idx)
        cand = torch.where(at_max, rows, torch.full_like(rows, -1))
        chunk_rows = torch.full_like(best_r, -1).scatter_reduce(1, idx, cand, reduce="amax")
        better = chunk_best > best_s
        best_s = torch.where(better, chunk_best, best_s)
        best_r = torch.where(better, chunk_rows, best_r)
    return best_s, best_r
