"""Discovery on one feature set (Doersch et al. 2015, sec. 4.2).

1. Sample constellations of four adjacent patches (2x2) from the dense grid.
2. For each of the four patches, find its best-correlated patch in every
   other image; an image's strength is the weakest of the four (all four must
   match well); keep the ``top_k`` strongest images.
3. Geometric verification (``verify``): the four matches must form a square
   of consistent size. Its scores are computed once per candidate, so other
   thresholds (``Thresholds``, tried by ``tune``) cost no new matching.
4. Score a constellation by the sum of its verified images' strengths: the
   number of verified matches, weighted by how well they match.
5. Merge near-duplicates: average-linkage hierarchical clustering on the
   Jaccard distance between constellations' image sets; each merged group is
   represented by its best-scoring constellation. Rank by score.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import torch
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist

from ctx_core.config import DiscoveryConfig
from ctx_core.discovery.constellations import sample_constellations
from ctx_core.discovery.schemas import COLUMNS, validate_clusters
from ctx_core.discovery.verify import verification_scores
from ctx_core.errors import UserError
from ctx_core.knn import best_per_group
from ctx_core.feature_store import BOX, FeatureSet

# candidate rows per matrix product: (4 * query_block) x CHUNK_ROWS scores in memory
CHUNK_ROWS = 8192


@dataclass(frozen=True)
class Thresholds:
    """The settings applied after matching: verification (``max_residual``,
    ``max_scale_ratio``) and clustering (``min_members``, ``merge_distance``).
    Trying another value needs no new matching, so these are what tuning changes."""

    max_residual: float
    max_scale_ratio: float
    min_members: int
    merge_distance: float

    @classmethod
    def of(cls, cfg: DiscoveryConfig) -> "Thresholds":
        return cls(**{name: getattr(cfg, name) for name in TUNABLE})


TUNABLE = tuple(f.name for f in fields(Thresholds))


@dataclass(frozen=True)
class Matches:
    """Step 2 for C constellations: the ``k`` strongest other images of each,
    before verification, with the scores verification compares (``verify``)."""

    cons: np.ndarray  # (C, 4) global feature rows of the queries
    rows: np.ndarray  # (C, k, 4) matched rows in each candidate image
    images: np.ndarray  # (C, k) image codes
    strengths: np.ndarray  # (C, k) weakest of the four correlations; -inf: no such image
    residual: np.ndarray  # (C, k) RMS misfit / fitted square side
    scale: np.ndarray  # (C, k) worst patch size ratio (>= 1)
    positive: np.ndarray  # (C, k) bool: the fitted scale is > 0 and the image exists
    query_images: np.ndarray  # (C,) image codes
    n_images: int


@dataclass(frozen=True)
class Candidate:
    """One scored constellation: its four query rows and its verified matches."""

    number: int
    rows: np.ndarray  # (4,) global feature rows
    score: float
    match_rows: np.ndarray  # (V, 4)
    match_images: np.ndarray  # (V,) image codes
    strengths: np.ndarray  # (V,)


def _union_box(boxes: np.ndarray) -> np.ndarray:
    """(..., 4, 4) boxes of four patches -> (..., 4) box around them."""
    return np.concatenate([boxes[..., :, :2].min(axis=-2), boxes[..., :, 2:].max(axis=-2)], axis=-1)


def match_constellations(fs: FeatureSet, cons: np.ndarray, cfg: DiscoveryConfig) -> Matches:
    """Step 2 for constellations ``cons`` (C, 4) of ``fs``, and the verification scores of every candidate."""
    codes, ids = pd.factorize(fs.index["image_id"])
    groups = torch.as_tensor(codes)
    if len(ids) < 2:
        raise UserError(f"discovery needs at least 2 images with patches; the feature set {fs.folder} has {len(ids)}")
    k = min(cfg.top_k, len(ids) - 1)
    parts: dict[str, list[np.ndarray]] = {"rows": [np.zeros((0, k, 4), np.int64)], "images": [np.zeros((0, k), np.int64)],
                                          "strengths": [np.zeros((0, k), np.float32)]}
    for start in range(0, len(cons), cfg.query_block):
        block = cons[start:start + cfg.query_block]
        b = len(block)
        s, r = best_per_group(fs.rows(block.ravel()), fs.chunks(CHUNK_ROWS), groups, len(ids))
        s, r = s.view(b, 4, -1), r.view(b, 4, -1)
        strength = s.min(dim=1).values  # (B, G)
        strength[torch.arange(b), groups[block[:, 0]]] = float("-inf")
        top_s, top_g = strength.topk(k, dim=1)  # (B, k)
        parts["rows"].append(r.gather(2, top_g[:, None, :].expand(b, 4, k)).permute(0, 2, 1).numpy())  # (B, k, 4)
        parts["images"].append(top_g.numpy())
        parts["strengths"].append(top_s.numpy())
    rows, images, strengths = (np.concatenate(parts[key]) for key in ("rows", "images", "strengths"))
    boxes = fs.index[BOX].to_numpy(np.float64)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    sizes = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    positive, residual, scale = verification_scores(centres[cons][:, None], sizes[cons][:, None], centres[rows], sizes[rows])
    return Matches(cons, rows, images, strengths, residual, scale, positive & np.isfinite(strengths),
                   codes[cons[:, 0]], len(ids))


def verified_candidates(matches: Matches, max_residual: float, max_scale_ratio: float) -> list[Candidate]:
    """Steps 3-4: each constellation with the candidates that pass verification, scored."""
    ok = matches.positive & (matches.residual <= max_residual) & (matches.scale <= max_scale_ratio)
    return [Candidate(i, matches.cons[i], float(matches.strengths[i][v].sum()), matches.rows[i][v],
                      matches.images[i][v], matches.strengths[i][v]) for i, v in enumerate(ok)]


def merge_duplicates(cands: list[Candidate], query_images: np.ndarray, n_images: int, distance: float) -> list[Candidate]:
    """Best-scoring constellation of each group of near-duplicates (step 5)."""
    if len(cands) < 2:
        return list(cands)
    member = np.zeros((len(cands), n_images), dtype=bool)
    for i, c in enumerate(cands):
        member[i, c.match_images] = True
        member[i, query_images[i]] = True
    labels = fcluster(linkage(pdist(member, "jaccard"), method="average"), t=distance, criterion="distance")
    best: dict[int, Candidate] = {}
    for label, c in zip(labels, cands):
        if label not in best or c.score > best[label].score:
            best[label] = c
    return list(best.values())


def clusters_table(fs: FeatureSet, kept: list[Candidate]) -> pd.DataFrame:
    """Ranked clusters, one row per member (query first), validated."""
    boxes = fs.index[BOX].to_numpy(np.int64)
    image_ids = fs.index["image_id"].to_numpy()
    rows = []
    for rank, c in enumerate(sorted(kept, key=lambda c: (-c.score, c.number)), 1):
        head = {"cluster_id": c.number, "rank": rank, "score": c.score}
        q = _union_box(boxes[c.rows])
        rows.append({**head, "image_id": image_ids[c.rows[0]], **dict(zip(BOX, q)), "role": "query", "similarity": 1.0})
        for m, s in zip(c.match_rows, c.strengths):
            rows.append({**head, "image_id": image_ids[m[0]], **dict(zip(BOX, _union_box(boxes[m]))),
                         "role": "match", "similarity": float(s)})
    table = pd.DataFrame(rows, columns=list(COLUMNS)).astype(COLUMNS)
    validate_clusters(table)
    return table


def match(fs: FeatureSet, cfg: DiscoveryConfig) -> Matches:
    """Steps 1-2, the expensive part: ``cfg.constellations`` constellations and their candidate images."""
    if fs.meta.get("sampling") != "dense":
        raise UserError(f"feature set {fs.folder} was sampled at random; discovery needs features.sampling = dense")
    step = max(1, round(1 / float(fs.meta["stride_fraction"])))
    return match_constellations(fs, sample_constellations(fs.index, step, cfg.constellations, cfg.seed), cfg)


def cluster(fs: FeatureSet, matches: Matches, thresholds: Thresholds) -> tuple[pd.DataFrame, dict[str, float]]:
    """Steps 3-5 under ``thresholds``: the clusters table and counts (constellations
    sampled, mean verified matches, constellations with at least ``min_members``, clusters)."""
    cands = verified_candidates(matches, thresholds.max_residual, thresholds.max_scale_ratio)
    strong = [c for c in cands if len(c.match_rows) >= thresholds.min_members]
    kept = merge_duplicates(strong, matches.query_images[[c.number for c in strong]], matches.n_images,
                            thresholds.merge_distance)
    stats = {
        "constellations": len(matches.cons),
        "verified_matches_mean": float(np.mean([len(c.match_rows) for c in cands])),
        "constellations_with_min_members": len(strong),
        "clusters": len(kept),
    }
    return clusters_table(fs, kept), stats


def discover(fs: FeatureSet, cfg: DiscoveryConfig) -> tuple[pd.DataFrame, dict[str, float]]:
    """Clusters of ``fs`` under the thresholds of ``cfg`` (see module doc), with
    ``cluster``'s counts and the seconds it took."""
    t0 = time.perf_counter()
    clusters, stats = cluster(fs, match(fs, cfg), Thresholds.of(cfg))
    return clusters, {**stats, "seconds": time.perf_counter() - t0}
