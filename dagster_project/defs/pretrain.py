"""``pretrain``: the encoder, trained on ``pretrain.task`` (context prediction by default) by ``ctx_core.pretext``."""

import json
from pathlib import Path

import dagster as dg
from pydantic import Field

from ctx_core.checks import encoder_problem, chance_threshold, CHANCE
from ctx_core.config import PretrainConfig
from ctx_core.encoder.artifact import read_contract
from ctx_core.pretext.run import PretrainResult, run_pretrain
from dagster_project.defs.resources import ComputeDevice, DvcLock, MlflowTracking
from dagster_project.settings import GPU_TAGS, inline_png
from dagster_project.stage import (
    LaunchpadConfig, asset_key, choices, finish, latest_metadata, launchpad, param, require_upstream, running,
    stage_asset, stage_settings,
)

Arch = choices("Arch", PretrainConfig, "arch")
Chroma = choices("Chroma", PretrainConfig, "chroma")
Task = choices("Task", PretrainConfig, "task")


class PretrainRunConfig(LaunchpadConfig):
    """Launchpad settings of ``pretrain``; an empty field keeps the params file's value."""

    task: Task | None = param("pretrain.task", "pretext task: context, rotation, jigsaw or instance")
    arch: Arch | None = param("pretrain.arch", "encoder tower")
    steps: int | None = param("pretrain.steps", "training steps")
    batch_size: int | None = param("pretrain.batch_size", "context pairs per step (all processes); other tasks get its tower passes")
    lr: float | None = param("pretrain.lr", "learning rate after warmup")
    chroma: Chroma | None = param("pretrain.chroma", "chromatic-aberration handling")
    resume: bool = Field(default=False, description="continue from the newest checkpoint")


@dg.asset(**stage_asset("pretrain"), deps=[asset_key("ingest")], kinds={"pytorch", "mlflow"}, pool="gpu",
          op_tags=GPU_TAGS)
def pretrain(context: dg.AssetExecutionContext, config: PretrainRunConfig, mlflow: MlflowTracking,
             compute: ComputeDevice, dvc: DvcLock) -> dg.MaterializeResult:
    settings = stage_settings(launchpad(config), mlflow, compute)
    require_upstream(settings.path(settings.params.pretrain.input), "ingest", "the image store")
    with running(context, settings, "pretrain"):
        result = run_pretrain(settings, resume=config.resume, extra_tags={"dagster_run_id": context.run.run_id},
                              progress=False)
    metadata = {
        "encoder": dg.MetadataValue.path(str(result.encoder)),
        "reports": dg.MetadataValue.path(str(result.reports["metrics"].parent)),
        "task": result.task,
        "held_out_accuracy": result.held_out_accuracy,
        "val_accuracy": result.val_accuracy,
        "chance_accuracy": result.chance_accuracy,
        "steps": result.steps,
        "pairs_per_second": result.pairs_per_second,
        "tower_passes_per_second": result.tower_passes_per_second,
        "train_images": result.train_images,
        "held_out_images": result.held_out_images,
        "val_images": result.val_images,
        "test_images": result.test_images,
        **position_metadata(result),
        "skipped_images": result.skipped_images,
        "data_version": result.data_version,
        "encoder_contract": dg.MetadataValue.json(read_contract(result.encoder).as_dict()),
        "registered_version": result.registered_version or "tracking off",
        "curves": dg.MetadataValue.md(inline_png(result.reports["curves"])),
        **{name: dg.MetadataValue.md(inline_png(result.reports[name]))
           for name in ("confusion", "pairs", "examples") if name in result.reports},
    }
    for warning in result.warnings:
        context.log.warning(warning)
    return finish(context, settings, "pretrain", result.mlflow_run_id, mlflow, dvc, metadata)


def position_metadata(result: PretrainResult) -> dict:
    """The absolute-position audit's numbers, or why it did not run."""
    audit = result.position_audit
    if not audit:
        return {"position_audit": next((n for n in result.notes if n.startswith("position audit")), "not run")}
    return {
        "position_ratio_learned": audit["position_ratio_learned"],
        "position_ratio_random_init": audit["position_ratio_random_init"],
        "position_difference": audit["position_difference"],
        "position_shortcut": bool(audit["position_shortcut"]),
        "position_warning": result.position_warning or "none",
    }


@dg.asset_check(asset=pretrain, blocking=True,
                description="held-out pretext accuracy is above the task's chance (context: the most frequent label's "
                            "share, >= 12.5 %; rotation 25 %; jigsaw 1 / permutations; instance 1 / (2N - 1)) + 2 SE")
def pretrain_beats_chance(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    reports = latest_metadata(context.instance, pretrain.key).get("reports")
    if reports is None:
        return dg.AssetCheckResult(passed=False, metadata={"error": "no materialisation of pretrain in Dagster names its reports"})
    metrics = json.loads((Path(reports) / "metrics.json").read_text())
    accuracy, pairs = metrics["held_out_accuracy"], metrics.get("eval_pairs", 0)
    chance = metrics.get("chance_accuracy", CHANCE)
    problem = encoder_problem(accuracy, pairs, chance)
    return dg.AssetCheckResult(
        passed=problem is None,
        metadata={"held_out_accuracy": accuracy, "chance_accuracy": chance,
                  "threshold": chance_threshold(pairs, chance), "eval_pairs": pairs,
                  "problem": problem or "none"},
    )
