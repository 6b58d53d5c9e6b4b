"""``extract`` and ``discover``: encoder features of patches and the objects
discovered from them, written by ``ctx_core.features`` and ``ctx_core.discovery``."""

import dagster as dg

from ctx_core.config import FeaturesConfig
from ctx_core.discovery.run import run_discover
from ctx_core.features.run import run_extract
from dagster_project.defs.resources import ComputeDevice, DvcLock, MlflowTracking
from dagster_project.settings import GPU_TAGS, inline_png
from dagster_project.stage import (
    LaunchpadConfig, asset_key, choices, finish, launchpad, param, require_upstream, running, stage_asset,
    stage_settings,
)

Layer = choices("Layer", FeaturesConfig, "layer")


class ExtractRunConfig(LaunchpadConfig):
    """Launchpad settings of ``features``; an empty field keeps the params file's value."""

    encoder: str | None = param("features.encoder", "encoder.pt path, models:/name@alias or models:/name/version")
    layer: Layer | None = param("features.layer", "encoder layer the features come from")
    max_images: int | None = param("features.max_images",
                                   "first N images of features.splits (all of them: overrides features.max_images=null)")


class DiscoverRunConfig(LaunchpadConfig):
    """Launchpad settings of ``discovery``; an empty field keeps the params file's value.
    The thresholds are the tie-break values when ``discovery.tune`` tries others on val."""

    constellations: int | None = param("discovery.constellations", "2x2 constellations sampled")
    max_residual: float | None = param("discovery.max_residual", "geometric verification: RMS misfit / square side")
    max_scale_ratio: float | None = param("discovery.max_scale_ratio", "geometric verification: patch size ratio")


@dg.asset(**stage_asset("extract"), deps=[asset_key("ingest"), asset_key("pretrain")], kinds={"pytorch", "parquet"},
          pool="gpu", op_tags=GPU_TAGS)
def extract(context: dg.AssetExecutionContext, config: ExtractRunConfig, mlflow: MlflowTracking,
            compute: ComputeDevice, dvc: DvcLock) -> dg.MaterializeResult:
    settings = stage_settings(launchpad(config), mlflow, compute)
    cfg = settings.params.features
    require_upstream(settings.path(cfg.input), "ingest", "the image store")
    if not cfg.encoder.startswith("models:/"):
        require_upstream(settings.path(cfg.encoder), "pretrain", "the encoder")
    with running(context, settings, "extract"):
        result = run_extract(settings, extra_tags={"dagster_run_id": context.run.run_id}, progress=False)
    metadata = {
        "path": dg.MetadataValue.path(str(result.out)),
        "data_version": result.data_version,
        "images": result.images,
        "patches": result.patches,
        **{f"{name}_patches_per_second": round(rate, 1) for name, rate in result.patches_per_second.items()},
        "feature_sets": dg.MetadataValue.json(sorted(result.sets)),
        "neighbours": dg.MetadataValue.md(inline_png(result.reports["neighbours"])),
    }
    return finish(context, settings, "extract", result.mlflow_run_id, mlflow, dvc, metadata)


@dg.asset(**stage_asset("discover"), deps=[extract, asset_key("ingest")], kinds={"python", "parquet"})
def discover(context: dg.AssetExecutionContext, config: DiscoverRunConfig, mlflow: MlflowTracking,
             dvc: DvcLock) -> dg.MaterializeResult:
    settings = stage_settings(launchpad(config), mlflow)
    require_upstream(settings.path(settings.params.features.out), "extract", "the feature shards")
    with running(context, settings, "discover"):
        result = run_discover(settings, extra_tags={"dagster_run_id": context.run.run_id})
    numbers = {f"{name}_{key}": value for name, entry in result.metrics.items() if isinstance(entry, dict)
               for key, value in entry.items() if isinstance(value, (int, float))}
    metadata = {
        "path": dg.MetadataValue.path(str(result.tables["learned"])),
        "data_version": result.data_version,
        **numbers,
        "evaluation": result.metrics["evaluation"],
        "tuning": result.metrics["tuning"],
        "clusters_montage": dg.MetadataValue.md(inline_png(result.reports["clusters"])),
        "purity_coverage": dg.MetadataValue.md(inline_png(result.reports["purity_coverage"])),
        "tuning_on_val": dg.MetadataValue.md(inline_png(result.reports["tuning"])),
    }
    return finish(context, settings, "discover", result.mlflow_run_id, mlflow, dvc, metadata)
