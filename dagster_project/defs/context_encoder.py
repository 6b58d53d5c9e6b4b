"""``context_encoder``: the context-prediction encoder, trained by ``ctx_core.pretext``."""

import json
from pathlib import Path

import dagster as dg
from pydantic import Field

from ctx_core.checks import encoder_problem, chance_threshold, CHANCE
from ctx_core.config import PretrainConfig
from ctx_core.pretext.run import run_pretrain
from dagster_project.defs.raw_images import raw_images
from dagster_project.defs.resources import ComputeDevice, DvcLock, MlflowTracking
from dagster_project.settings import GPU_TAGS, default_params, inline_png
from dagster_project.stage import choices, finish, launchpad, require_upstream, running, stage_settings

_PRE = default_params().params.pretrain
Arch = choices("Arch", PretrainConfig, "arch")
Chroma = choices("Chroma", PretrainConfig, "chroma")


class PretrainRunConfig(dg.Config):
    """Launchpad settings; defaults are params.yaml's ``pretrain``."""

    arch: Arch = Field(default=Arch[_PRE.arch], description="compact | paper | resnet18")
    steps: int = Field(default=_PRE.steps, description="training steps")
    batch_size: int = Field(default=_PRE.batch_size, description="pairs per step (all processes)")
    lr: float = Field(default=_PRE.lr)
    chroma: Chroma = Field(default=Chroma[_PRE.chroma], description="chromatic-aberration handling")
    resume: bool = Field(default=False, description="continue from the newest checkpoint")
    overrides: list[str] = Field(default=[], description="extra section.key=value settings")


@dg.asset(
    deps=[raw_images],
    group_name="pretrain",
    kinds={"pytorch", "mlflow"},
    pool="gpu",
    op_tags=GPU_TAGS,
    description="Encoder trained to predict the relative position of two patches (ctx pretrain).",
)
def context_encoder(context: dg.AssetExecutionContext, config: PretrainRunConfig, mlflow: MlflowTracking,
                    compute: ComputeDevice, dvc: DvcLock) -> dg.MaterializeResult:
    settings = stage_settings(launchpad(config, {
        "arch": "pretrain.arch", "steps": "pretrain.steps", "batch_size": "pretrain.batch_size",
        "lr": "pretrain.lr", "chroma": "pretrain.chroma",
    }), mlflow, compute)
    require_upstream(settings.path(settings.params.pretrain.input), "raw_images", "the image store")
    with running(context, settings, "pretrain"):
        result = run_pretrain(settings, resume=config.resume, extra_tags={"dagster_run_id": context.run.run_id},
                              progress=False)
    metadata = {
        "encoder": dg.MetadataValue.path(str(result.encoder)),
        "reports": dg.MetadataValue.path(str(result.reports["metrics"].parent)),
        "held_out_accuracy": result.held_out_accuracy,
        "chance_accuracy": result.chance_accuracy,
        "steps": result.steps,
        "pairs_per_second": result.pairs_per_second,
        "train_images": result.train_images,
        "held_out_images": result.held_out_images,
        "skipped_images": result.skipped_images,
        "data_version": result.data_version,
        "registered_version": result.registered_version or "tracking off",
        "curves": dg.MetadataValue.md(inline_png(result.reports["curves"])),
        "confusion": dg.MetadataValue.md(inline_png(result.reports["confusion"])),
        "pairs": dg.MetadataValue.md(inline_png(result.reports["pairs"])),
    }
    return finish(context, settings, "pretrain", result.mlflow_run_id, mlflow, dvc, metadata)


@dg.asset_check(asset=context_encoder, blocking=True, description="held-out pretext accuracy is above chance (the most frequent label's share, >= 12.5 %)")
def context_encoder_beats_chance(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    event = context.instance.get_latest_materialization_event(context_encoder.key)
    if event is None or event.asset_materialization is None:
        return dg.AssetCheckResult(passed=False, metadata={"error": "context_encoder has not been materialised"})
    reports = Path(event.asset_materialization.metadata["reports"].value)
    metrics = json.loads((reports / "metrics.json").read_text())
    accuracy, pairs = metrics["held_out_accuracy"], metrics.get("eval_pairs", 0)
    chance = max(metrics.get("chance_accuracy", CHANCE), CHANCE)
    problem = encoder_problem(accuracy, pairs, chance)
    return dg.AssetCheckResult(
        passed=problem is None,
        metadata={"held_out_accuracy": accuracy, "chance_accuracy": chance,
                  "threshold": chance_threshold(pairs, chance), "eval_pairs": pairs,
                  "problem": problem or "none"},
    )
