"""Discovery's thresholds, chosen on the ``val`` images (choices on val, test scored once).

Matching (``discover.match``) runs once per feature set; each setting of the
grid (``discovery.tune``) redoes only verification and clustering
(``discover.cluster``) on those matches and is scored on the ``val`` images
alone (``Evaluation.score``). The chosen setting has

1. the highest val purity at ``coverage_at`` among settings that reach that coverage on val;
2. when none reaches it, the largest val area under purity-coverage;
3. among ties, the fewest thresholds changed from the discovery section's own
   values, then the earliest in the grid (values ascending).

Only the val split's boxes are read here, so the test split stays unseen until
the chosen clusters are scored once.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass

import pandas as pd

from ctx_core.config import DiscoveryConfig
from ctx_core.discovery.discover import TUNABLE, Matches, Thresholds, cluster
from ctx_core.discovery.evaluate import Evaluation, purity_key
from ctx_core.feature_store import FeatureSet

TABLE_COLUMNS = ["features", *TUNABLE, "changed", "clusters", "val_purity_at_coverage", "val_area",
                 "val_max_coverage", "chosen"]


@dataclass(frozen=True)
class Tuned:
    """The chosen thresholds, their clusters (``cluster``'s table and counts) and the val table."""

    thresholds: Thresholds
    clusters: pd.DataFrame
    stats: dict[str, float]
    table: pd.DataFrame
    seconds: float


def tuning_grid(cfg: DiscoveryConfig) -> list[Thresholds]:
    """Every combination of ``cfg.tune``'s values, each threshold's own value in
    ``cfg`` included, ascending; just ``cfg``'s thresholds when there is nothing to tune."""
    base = Thresholds.of(cfg)
    values = []
    for name in TUNABLE:
        tried = getattr(cfg.tune, name) if cfg.tune is not None else ()
        values.append(sorted({*tried, getattr(base, name)}))
    return [Thresholds(*combo) for combo in itertools.product(*values)]


def changed(thresholds: Thresholds, base: Thresholds) -> int:
    """How many thresholds differ from ``base``."""
    return sum(getattr(thresholds, n) != getattr(base, n) for n in TUNABLE)


def choose(table: pd.DataFrame) -> int:
    """Position in ``table`` (``TABLE_COLUMNS``, grid order) of the chosen setting (module doc)."""
    reached = table["val_purity_at_coverage"].notna()
    key, pool = ("val_purity_at_coverage", table[reached]) if reached.any() else ("val_area", table)
    best = pool[pool[key] == pool[key].max()]
    return int(best.sort_values("changed", kind="stable").index[0])


def tune(fs: FeatureSet, matches: Matches, cfg: DiscoveryConfig, val: Evaluation, features: str) -> Tuned:
    """Score every setting of ``tuning_grid(cfg)`` on the ``val`` images (``val.skipped`` must be None)."""
    if val.skipped is not None:
        raise ValueError(f"tuning needs val images with boxes: {val.skipped}")
    t0 = time.perf_counter()
    base = Thresholds.of(cfg)
    results, rows = [], []
    for thresholds in tuning_grid(cfg):
        clusters, stats = cluster(fs, matches, thresholds)
        _, numbers = val.score(clusters, cfg.coverage_at)
        results.append((thresholds, clusters, stats))
        rows.append({"features": features, **asdict(thresholds), "changed": changed(thresholds, base),
                     "clusters": stats["clusters"], "val_purity_at_coverage": numbers[purity_key(cfg.coverage_at)],
                     "val_area": numbers["purity_coverage_area"], "val_max_coverage": numbers["max_coverage"],
                     "chosen": False})
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS).astype({"val_purity_at_coverage": float})
    best = choose(table)
    table.loc[best, "chosen"] = True
    thresholds, clusters, stats = results[best]
    return Tuned(thresholds, clusters, stats, table, time.perf_counter() - t0)
