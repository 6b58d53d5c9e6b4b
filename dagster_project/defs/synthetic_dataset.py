"""``synthetic_voc``: the embedded default dataset, written by ``ctx_core.synth``."""

import dagster as dg
from pydantic import Field

from ctx_core.synth.run import run_synth
from dagster_project.defs.resources import DvcLock, MlflowTracking
from dagster_project.settings import default_params, inline_png
from dagster_project.stage import finish, launchpad, running, stage_settings

_SYNTH = default_params().params.data.synth


class SynthRunConfig(dg.Config):
    """Launchpad settings; defaults are params.yaml's ``data.synth``."""

    images: int = Field(default=_SYNTH.images, description="number of images in all splits")
    seed: int = Field(default=_SYNTH.seed)
    size: int = Field(default=_SYNTH.size, description="longer image side in px")
    overrides: list[str] = Field(default=[], description="extra section.key=value settings")


@dg.asset(
    group_name="data",
    kinds={"python", "voc"},
    description="Synthetic VOC benchmark: objects made of parts on textured backgrounds (ctx synth).",
)
def synthetic_voc(context: dg.AssetExecutionContext, config: SynthRunConfig, mlflow: MlflowTracking,
                  dvc: DvcLock) -> dg.MaterializeResult:
    settings = stage_settings(launchpad(config, {
        "images": "data.synth.images", "seed": "data.synth.seed", "size": "data.synth.size",
    }), mlflow)
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
