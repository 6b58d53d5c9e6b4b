"""``run_discover``: clusters for every feature set of ``ctx extract``, with
thresholds chosen on the ``val`` images and purity-coverage scored once on ``test``.

Writes ``discovery.out/clusters.parquet`` (learned features) and
``clusters_<baseline>.parquet``; under ``discovery.reports``: ``metrics.json``
(per feature set: the chosen thresholds ``chosen_*``, the chosen setting's
``*_val`` numbers and the reported ``*_test`` numbers), ``tuning.csv`` and
``tuning.png`` (every setting tried, scored on val), ``purity_coverage/<features>.csv``
(the test curve, one row per cluster in rank order), ``purity_coverage.png``
and ``clusters.png`` (top clusters of the learned features;
``clusters_<baseline>.png`` for the baselines).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ctx_core.config import Settings
from ctx_core.discovery.discover import TUNABLE, Thresholds, cluster, match
from ctx_core.discovery.evaluate import CURVE_COLUMNS, Evaluation, evaluation_split
from ctx_core.discovery.plots import clusters_montage, curves_plot, tuning_plot
from ctx_core.discovery.tune import TABLE_COLUMNS, tune, tuning_grid
from ctx_core.feature_store import LEARNED, FeatureSet, FeatureSetError
from ctx_core.fsutil import atomic_output_dir
from ctx_core.store.layout import read_annotations, read_manifest
from ctx_core.tracking import stage_run

FEATURE_SETS = (LEARNED, "random_init", "raw_pixels")


@dataclass(frozen=True)
class DiscoverResult:
    out: Path
    tables: dict[str, Path]
    metrics: dict[str, Any]
    evaluation_skipped: str | None
    reports: dict[str, Path]
    mlflow_run_id: str | None
    data_version: str


def _suffix(name: str) -> str:
    return "" if name == LEARNED else f"_{name}"


def _store_tables(store: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return read_manifest(store, ["image_id", "split", "sha256"]), read_annotations(store)


def _tuning_note(varied: list[str], settings: int, val: Evaluation) -> str:
    if val.skipped:
        return f"off, the params' thresholds are used (val {val.describe()})"
    if not varied:
        return f"off (discovery.tune lists no other value), the params' thresholds are used; scored on {val.describe()}"
    return f"chosen on {val.describe()}: {settings} settings of {', '.join(varied)} per feature set"


def _suffixed(numbers: dict[str, Any], split: str) -> dict[str, Any]:
    return {f"{k}_{split}": v for k, v in numbers.items()}


def run_discover(settings: Settings, extra_tags: dict[str, str] | None = None) -> DiscoverResult:
    cfg = settings.params.discovery
    root = settings.path(settings.params.features.out)
    names = [n for n in FEATURE_SETS if (root / n / "index.parquet").is_file()]
    if LEARNED not in names:
        raise FeatureSetError(f"no learned feature set at {root / LEARNED}; run `ctx extract` first")
    sets = {n: FeatureSet.open(root / n) for n in names}
    store = Path(sets[LEARNED].meta["store"])
    manifest, annotations = _store_tables(store)
    image_ids = set(sets[LEARNED].index["image_id"])
    val = evaluation_split(manifest, annotations, image_ids, "val")
    test = evaluation_split(manifest, annotations, image_ids, "test")
    grid = tuning_grid(cfg)
    varied = [n for n in TUNABLE if len({getattr(t, n) for t in grid}) > 1]
    out = settings.path(cfg.out)
    reports = settings.path(cfg.reports)
    reports.mkdir(parents=True, exist_ok=True)
    data_version = str(sets[LEARNED].meta.get("data_version", "unknown"))
    metrics: dict[str, Any] = {}
    curves: dict[str, pd.DataFrame] = {}
    tables: dict[str, Path] = {}
    tuning: list[pd.DataFrame] = []
    files: dict[str, Path] = {}
    with stage_run(settings, "discover", {"data_version": data_version, **(extra_tags or {})}) as run:
        run.log_params({**cfg.model_dump(mode="json"), "feature_sets": ",".join(names),
                        "evaluation": "skipped" if test.skipped else "purity-coverage on test",
                        "tuning": "off" if val.skipped or not varied else "val"})
        with atomic_output_dir(out, force=True) as tmp:
            for name, fs in sets.items():
                t0 = time.perf_counter()
                matches = match(fs, cfg)
                entry: dict[str, Any] = {}
                if val.skipped is None:
                    tuned = tune(fs, matches, cfg, val, name)
                    chosen, clusters, stats = tuned.thresholds, tuned.clusters, tuned.stats
                    tuning.append(tuned.table)
                    entry["tuning_seconds"] = round(tuned.seconds, 4)
                    entry.update(_suffixed(val.score(clusters, cfg.coverage_at)[1], "val"))
                else:
                    chosen = Thresholds.of(cfg)
                    clusters, stats = cluster(fs, matches, chosen)
                entry.update({k: round(v, 4) if isinstance(v, float) else v for k, v in stats.items()})
                entry.update({f"chosen_{k}": v for k, v in asdict(chosen).items()})
                entry["seconds"] = round(time.perf_counter() - t0, 4)
                clusters.to_parquet(tmp / f"clusters{_suffix(name)}.parquet", index=False)
                tables[name] = out / f"clusters{_suffix(name)}.parquet"
                if test.skipped is None:
                    curves[name], numbers = test.score(clusters, cfg.coverage_at)
                    entry.update(_suffixed(numbers, "test"))
                metrics[name] = entry
                files[f"clusters{_suffix(name)}"] = clusters_montage(
                    clusters, store, cfg.montage_clusters, cfg.montage_members, reports / f"clusters{_suffix(name)}.png")
        metrics["evaluation"] = test.describe()
        metrics["tuning"] = _tuning_note(varied, len(grid), val)
        (reports / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        files["metrics"] = reports / "metrics.json"
        # written even when tuning or evaluation is skipped (header only), so the stage's outputs always exist
        table = pd.concat(tuning, ignore_index=True) if tuning else pd.DataFrame(columns=TABLE_COLUMNS)
        table.to_csv(reports / "tuning.csv", index=False)
        files["tuning_table"] = reports / "tuning.csv"
        files["tuning"] = tuning_plot(table, varied, cfg.coverage_at, reports / "tuning.png", metrics["tuning"])
        (reports / "purity_coverage").mkdir(exist_ok=True)
        for name in sets:
            files[f"purity_coverage_{name}"] = reports / "purity_coverage" / f"{name}.csv"
            curves.get(name, pd.DataFrame(columns=CURVE_COLUMNS)).to_csv(files[f"purity_coverage_{name}"], index=False)
        files["purity_coverage"] = curves_plot(curves, metrics, cfg.coverage_at, reports / "purity_coverage.png",
                                               note=f"evaluation {metrics['evaluation']}" if test.skipped else "no clusters")
        for name, entry in metrics.items():
            if isinstance(entry, dict):
                run.log_metrics({f"{name}_{k}": v for k, v in entry.items() if isinstance(v, (int, float))})
        for p in [*files.values(), *tables.values()]:
            run.log_artifact(p, "discover")
    return DiscoverResult(out, tables, metrics, test.skipped, files, run.run_id, data_version)
