"""``synth``: the embedded default dataset, written by ``ctx_core.synth``."""

import dagster as dg

from ctx_core.synth.run import run_synth
from dagster_project.defs.resources import DvcLock, MlflowTracking
from dagster_project.settings import inline_png
from dagster_project.stage import LaunchpadConfig, finish, launchpad, param, running, stage_asset, stage_settings


class SynthRunConfig(LaunchpadConfig):
    """Launchpad settings of ``data.synth``; an empty field keeps the params file's value."""

    images: int | None = param("data.synth.images", "number of images in all splits")
    seed: int | None = param("data.synth.seed", "random seed of the scenes")
    size: int | None = param("data.synth.size", "longer image side in px")


@dg.asset(**stage_asset("synth"), kinds={"python", "voc"})
def synth(context: dg.AssetExecutionContext, config: SynthRunConfig, mlflow: MlflowTracking,
          dvc: DvcLock) -> dg.MaterializeResult:
    settings = stage_settings(launchpad(config), mlflow)
    with running(context, settings, "synth"):
        result = run_synth(settings, force=True, extra_tags={"dagster_run_id": context.run.run_id}, progress=False)
    metadata = {
        "path": dg.MetadataValue.path(str(result.out)),
        "data_version": result.data_version,
        "images": result.images,
        "objects": result.objects,
        **{f"images_{k}": v for k, v in result.split_sizes.items()},
        "objects_per_image": result.metrics["objects_per_image"],
        "difficult_share": result.metrics["difficult_share"],
        "class_counts": dg.MetadataValue.json(result.class_counts),
        "montage": dg.MetadataValue.md(inline_png(result.montage)),
    }
    return finish(context, settings, "synth", result.mlflow_run_id, mlflow, dvc, metadata, result.data_version)
