"""``run_discover``: clusters for every feature set of ``ctx extract``, evaluated
where the store has boxes.

Writes ``discovery.out/clusters.parquet`` (learned features) and
``clusters_<baseline>.parquet``; under ``discovery.reports``: ``metrics.json``,
``purity_coverage/<features>.csv`` (one row per cluster in rank order),
``purity_coverage.png`` and ``clusters.png`` (top clusters of the learned
features; ``clusters_<baseline>.png`` for the baselines).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ctx_core.config import Settings
from ctx_core.discovery.discover import discover
from ctx_core.discovery.evaluate import CURVE_COLUMNS, curve_area, evaluation_objects, purity_at, purity_coverage
from ctx_core.discovery.plots import clusters_montage, curves_plot
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
    return read_manifest(store, ["image_id", "split"]), read_annotations(store)


def run_discover(settings: Settings, extra_tags: dict[str, str] | None = None) -> DiscoverResult:
    cfg = settings.params.discovery
    root = settings.path(settings.params.features.out)
    names = [n for n in FEATURE_SETS if (root / n / "index.parquet").is_file()]
    if LEARNED not in names:
        raise FeatureSetError(f"no learned feature set at {root / LEARNED}; run `ctx extract` first")
    sets = {n: FeatureSet.open(root / n) for n in names}
    store = Path(sets[LEARNED].meta["store"])
    manifest, annotations = _store_tables(store)
    labelled, objects, skipped = evaluation_objects(manifest, annotations, set(sets[LEARNED].index["image_id"]))
    out = settings.path(cfg.out)
    reports = settings.path(cfg.reports)
    reports.mkdir(parents=True, exist_ok=True)
    data_version = str(sets[LEARNED].meta.get("data_version", "unknown"))
    metrics: dict[str, Any] = {}
    curves: dict[str, pd.DataFrame] = {}
    tables: dict[str, Path] = {}
    files: dict[str, Path] = {}
    with stage_run(settings, "discover", {"data_version": data_version, **(extra_tags or {})}) as run:
        run.log_params({**cfg.model_dump(mode="json"), "feature_sets": ",".join(names),
                        "evaluation": "skipped" if skipped else "purity-coverage"})
        with atomic_output_dir(out, force=True) as tmp:
            for name, fs in sets.items():
                clusters, stats = discover(fs, cfg)
                clusters.to_parquet(tmp / f"clusters{_suffix(name)}.parquet", index=False)
                tables[name] = out / f"clusters{_suffix(name)}.parquet"
                entry: dict[str, Any] = {k: round(v, 4) if isinstance(v, float) else v for k, v in stats.items()}
                if skipped is None:
                    curves[name] = curve = purity_coverage(clusters[clusters["image_id"].isin(labelled)], objects)
                    entry.update({
                        "purity_coverage_area": round(curve_area(curve), 4),
                        f"purity_at_{round(cfg.coverage_at * 100)}pct_coverage": purity_at(curve, cfg.coverage_at),
                        "max_coverage": round(float(curve["coverage"].max()), 4) if len(curve) else 0.0,
                        "top_cluster_purity": round(float(curve["cluster_purity"].iloc[0]), 4) if len(curve) else None,
                    })
                metrics[name] = entry
                files[f"clusters{_suffix(name)}"] = clusters_montage(
                    clusters, store, cfg.montage_clusters, cfg.montage_members, reports / f"clusters{_suffix(name)}.png")
        metrics["evaluation"] = f"skipped: {skipped}" if skipped else (
            f"{len(labelled)} labelled images, {len(objects)} non-difficult objects")
        (reports / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        files["metrics"] = reports / "metrics.json"
        # written even when evaluation is skipped (header only), so the stage's outputs always exist
        (reports / "purity_coverage").mkdir(exist_ok=True)
        for name in sets:
            files[f"purity_coverage_{name}"] = reports / "purity_coverage" / f"{name}.csv"
            curves.get(name, pd.DataFrame(columns=CURVE_COLUMNS)).to_csv(files[f"purity_coverage_{name}"], index=False)
        files["purity_coverage"] = curves_plot(curves, metrics, cfg.coverage_at, reports / "purity_coverage.png",
                                               note=f"evaluation skipped: {skipped}" if skipped else "no clusters")
        for name, entry in metrics.items():
            if isinstance(entry, dict):
                run.log_metrics({f"{name}_{k}": v for k, v in entry.items() if isinstance(v, (int, float))})
        for p in [*files.values(), *tables.values()]:
            run.log_artifact(p, "discover")
    return DiscoverResult(out, tables, metrics, skipped, files, run.run_id, data_version)
