"""``patch_features`` and ``object_clusters``: encoder features of patches and the
objects discovered from them, written by ``ctx_core.features`` and ``ctx_core.discovery``."""

import dagster as dg
from pydantic import Field

from ctx_core.config import FeaturesConfig
from ctx_core.discovery.run import run_discover
from ctx_core.features.run import run_extract
from dagster_project.defs.resources import ComputeDevice, DvcLock, MlflowTracking
from dagster_project.settings import GPU_TAGS, default_params, inline_png
from dagster_project.stage import choices, finish, launchpad, require_upstream, running, stage_settings

_PARAMS = default_params().params
_FEATURES = _PARAMS.features
_DISCOVERY = _PARAMS.discovery
Layer = choices("Layer", FeaturesConfig, "layer")


class ExtractRunConfig(dg.Config):
    """Launchpad settings; defaults are params.yaml's ``features``."""

    encoder: str = Field(default=_FEATURES.encoder, description="encoder.pt path, models:/name@alias or models:/name/version")
    layer: Layer = Field(default=Layer[_FEATURES.layer], description="fc6 or pool5")
    max_images: int | None = Field(default=_FEATURES.max_images, description="first N images of features.splits; null = all")
    overrides: list[str] = Field(default=[], description="extra section.key=value settings")


class DiscoverRunConfig(dg.Config):
    """Launchpad settings; defaults are params.yaml's ``discovery``."""

    constellations: int = Field(default=_DISCOVERY.constellations, description="2x2 constellations sampled")
    max_residual: float = Field(default=_DISCOVERY.max_residual, description="geometric verification: RMS misfit / square side")
    max_scale_ratio: float = Field(default=_DISCOVERY.max_scale_ratio, description="geometric verification: patch size ratio")
    overrides: list[str] = Field(default=[], description="extra section.key=value settings")


@dg.asset(
    deps=[dg.AssetKey("raw_images"), dg.AssetKey("context_encoder")],
    group_name="discovery",
    kinds={"pytorch", "parquet"},
    pool="gpu",
    op_tags=GPU_TAGS,
    description="Encoder, random-init and raw-pixel features of dense multi-scale patches, in shards (ctx extract).",
)
def patch_features(context: dg.AssetExecutionContext, config: ExtractRunConfig, mlflow: MlflowTracking,
                   compute: ComputeDevice, dvc: DvcLock) -> dg.MaterializeResult:
    settings = stage_settings(launchpad(config, {
        "encoder": "features.encoder", "layer": "features.layer", "max_images": "features.max_images",
    }), mlflow, compute)
    cfg = settings.params.features
    require_upstream(settings.path(cfg.input), "raw_images", "the image store")
    if not cfg.encoder.startswith("models:/"):
        require_upstream(settings.path(cfg.encoder), "context_encoder", "the encoder")
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


@dg.asset(
    deps=[patch_features, dg.AssetKey("raw_images")],
    group_name="discovery",
    kinds={"python", "parquet"},
    description="Objects discovered from constellations of patches, ranked, with purity-coverage (ctx discover).",
)
def object_clusters(context: dg.AssetExecutionContext, config: DiscoverRunConfig, mlflow: MlflowTracking,
                    dvc: DvcLock) -> dg.MaterializeResult:
    settings = stage_settings(launchpad(config, {
        "constellations": "discovery.constellations", "max_residual": "discovery.max_residual",
        "max_scale_ratio": "discovery.max_scale_ratio",
    }), mlflow)
    require_upstream(settings.path(settings.params.features.out), "patch_features", "the feature shards")
    with running(context, settings, "discover"):
        result = run_discover(settings, extra_tags={"dagster_run_id": context.run.run_id})
    numbers = {f"{name}_{key}": value for name, entry in result.metrics.items() if isinstance(entry, dict)
               for key, value in entry.items() if isinstance(value, (int, float))}
    metadata = {
        "path": dg.MetadataValue.path(str(result.tables["learned"])),
        "data_version": result.data_version,
        **numbers,
        "evaluation": result.metrics["evaluation"],
        "clusters_montage": dg.MetadataValue.md(inline_png(result.reports["clusters"])),
        "purity_coverage": dg.MetadataValue.md(inline_png(result.reports["purity_coverage"])),
    }
    return finish(context, settings, "discover", result.mlflow_run_id, mlflow, dvc, metadata)
