"""``probe``: frozen-feature probes of the encoder and its baselines (random-init
tower, raw pixels) with bootstrap intervals, written by ``ctx_core.probe``; the
outputs are those of ``ctx probe``."""

import math

import dagster as dg

from ctx_core.config import ProbeConfig
from ctx_core.probe.run import run_probe
from dagster_project.defs.resources import ComputeDevice, DvcLock, MlflowTracking
from dagster_project.settings import inline_png
from dagster_project.stage import (
    LaunchpadConfig, asset_key, choices, finish, launchpad, param, require_upstream, running, stage_asset,
    stage_settings,
)

Layer = choices("ProbeLayer", ProbeConfig, "layer")


class ProbeRunConfig(LaunchpadConfig):
    """Launchpad settings of ``probe``; an empty field keeps the params file's value."""

    encoder: str | None = param("probe.encoder", "encoder.pt path, models:/name@alias or models:/name/version")
    layer: Layer | None = param("probe.layer", "encoder layer the features come from")
    bootstrap: int | None = param("probe.bootstrap", "resamples of the test images for the intervals")


@dg.asset(**stage_asset("probe"), deps=[asset_key("ingest"), asset_key("pretrain")], kinds={"pytorch", "sklearn"})
def probe(context: dg.AssetExecutionContext, config: ProbeRunConfig, mlflow: MlflowTracking,
          compute: ComputeDevice, dvc: DvcLock) -> dg.MaterializeResult:
    settings = stage_settings(launchpad(config), mlflow, compute)
    cfg = settings.params.probe
    require_upstream(settings.path(cfg.input), "ingest", "the image store")
    if not cfg.encoder.startswith("models:/"):
        require_upstream(settings.path(cfg.encoder), "pretrain", "the encoder")
    with running(context, settings, "probe"):
        result = run_probe(settings, extra_tags={"dagster_run_id": context.run.run_id}, progress=False)
    if result.skipped:
        context.log.warning(f"probes skipped: {result.skipped}")
        metadata = {"skipped": result.skipped}
    else:
        numbers = {}
        for protocol, by in result.scores.items():
            for name, ci in by.items():
                if math.isfinite(ci.mean):
                    numbers[f"{protocol}_{name}"] = ci.mean
                    numbers[f"{protocol}_{name}_interval"] = ci.format(100)
        metadata = {
            "probe_table": dg.MetadataValue.md(result.reports["table_md"].read_text()),
            "chart": dg.MetadataValue.md(inline_png(result.reports["chart"])),
            "verdict": result.verdict(),
            **numbers,
            "test_images": result.test_images,
            "test_crops": result.test_crops,
            "encoder_version": result.encoder_version,
            "data_version": result.data_version,
            "seconds": round(result.seconds, 1),
            **({"position_ratio_learned": result.audit.ratios["learned"].mean,
                "position_ratio_random_init": result.audit.ratios["random_init"].mean,
                "position_shortcut": result.audit.shortcut} if result.audit else {}),
            "notes": dg.MetadataValue.md("\n".join(f"- {n}" for n in result.notes) or "none"),
        }
    return finish(context, settings, "probe", result.mlflow_run_id, mlflow, dvc, metadata)
