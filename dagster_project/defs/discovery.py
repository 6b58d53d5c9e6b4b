"""``patch_features`` and ``object_clusters``: encoder features of patches and the
objects discovered from them, written by ``ctx_core.features`` and ``ctx_core.discovery``."""

import dagster as dg
from pydantic import Field

from ctx_core.config import load_params
from ctx_core.discovery.run import run_discover
from ctx_core.errors import UserError
from ctx_core.features.run import run_extract
from ctx_core.tracking import tracking_uri
from dagster_project.defs.resources import MlflowTracking
from dagster_project.settings import default_params, inline_png, params_file

_PARAMS = default_params().params
_FEATURES = _PARAMS.features
_DISCOVERY = _PARAMS.discovery


class ExtractRunConfig(dg.Config):
    """Launchpad settings; defaults are params.yaml's ``features``."""

    encoder: str = Field(default=_FEATURES.encoder, description="encoder.pt path, models:/name@alias or models:/name/version")
    layer: str = Field(default=_FEATURES.layer, description="fc6 or pool5")
    max_images: int | None = Field(default=_FEATURES.max_images, description="first N images of features.splits; null = all")
    overrides: list[str] = Field(default=[], description="extra section.key=value settings")


class DiscoverRunConfig(dg.Config):
    """Launchpad settings; defaults are params.yaml's ``discovery``."""

    constellations: int = Field(default=_DISCOVERY.constellations, description="2x2 constellations sampled")
    max_residual: float = Field(default=_DISCOVERY.max_residual, description="geometric verification: RMS misfit / square side")
    max_scale_ratio: float = Field(default=_DISCOVERY.max_scale_ratio, description="geometric verification: patch size ratio")
    overrides: list[str] = Field(default=[], description="extra section.key=value settings")


def _run_link(mlflow: MlflowTracking, run_id: str | None, uri: str) -> dict:
    url = mlflow.run_url(run_id, uri)
    return {"mlflow_run": dg.MetadataValue.url(url)} if url else {}


@dg.asset(
    deps=[dg.AssetKey("raw_images"), dg.AssetKey("context_encoder")],
    group_name="discovery",
    kinds={"pytorch", "parquet"},
    description="Encoder, random-init and raw-pixel features of dense multi-scale patches, in shards (ctx extract).",
)
def patch_features(context: dg.AssetExecutionContext, config: ExtractRunConfig, mlflow: MlflowTracking) -> dg.MaterializeResult:
    overrides = [f"features.encoder={config.encoder}", f"features.layer={config.layer}",
                 f"features.max_images={'null' if config.max_images is None else config.max_images}",
                 *config.overrides, *mlflow.overrides()]
    try:
        settings = load_params(params_file(), overrides)
        result = run_extract(settings, extra_tags={"dagster_run_id": context.run.run_id}, progress=False)
    except UserError as exc:
        raise dg.Failure(description=str(exc)) from None
    metadata = {
        "path": dg.MetadataValue.path(str(result.out)),
        "data_version": result.data_version,
        "images": result.images,
        "patches": result.patches,
        **{f"{name}_patches_per_second": round(rate, 1) for name, rate in result.patches_per_second.items()},
        "feature_sets": dg.MetadataValue.json(sorted(result.sets)),
        "neighbours": dg.MetadataValue.md(inline_png(result.reports["neighbours"])),
        "mlflow_run_id": result.mlflow_run_id or "tracking off",
        **_run_link(mlflow, result.mlflow_run_id, tracking_uri(settings)),
    }
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    deps=[patch_features, dg.AssetKey("raw_images")],
    group_name="discovery",
    kinds={"python", "parquet"},
    description="Objects discovered from constellations of patches, ranked, with purity-coverage (ctx discover).",
)
def object_clusters(context: dg.AssetExecutionContext, config: DiscoverRunConfig, mlflow: MlflowTracking) -> dg.MaterializeResult:
    overrides = [f"discovery.constellations={config.constellations}", f"discovery.max_residual={config.max_residual}",
                 f"discovery.max_scale_ratio={config.max_scale_ratio}", *config.overrides, *mlflow.overrides()]
    try:
        settings = load_params(params_file(), overrides)
        result = run_discover(settings, extra_tags={"dagster_run_id": context.run.run_id})
    except UserError as exc:
        raise dg.Failure(description=str(exc)) from None
    numbers = {f"{name}_{key}": value for name, entry in result.metrics.items() if isinstance(entry, dict)
               for key, value in entry.items() if isinstance(value, (int, float))}
    metadata = {
        "path": dg.MetadataValue.path(str(result.tables["learned"])),
        "data_version": result.data_version,
        **numbers,
        "evaluation": result.metrics["evaluation"],
        "clusters_montage": dg.MetadataValue.md(inline_png(result.reports["clusters"])),
        "purity_coverage": dg.MetadataValue.md(inline_png(result.reports["purity_coverage"])),
        "mlflow_run_id": result.mlflow_run_id or "tracking off",
        **_run_link(mlflow, result.mlflow_run_id, tracking_uri(settings)),
    }
    return dg.MaterializeResult(metadata=metadata)
