"""``context_encoder``: the context-prediction encoder, trained by ``ctx_core.pretext``."""

import json
from pathlib import Path

import dagster as dg
from pydantic import Field

from ctx_core.config import load_params
from ctx_core.errors import UserError
from ctx_core.pretext.run import run_pretrain
from ctx_core.tracking import tracking_uri
from dagster_project.defs.raw_images import raw_images
from dagster_project.defs.resources import MlflowTracking
from dagster_project.settings import GPU_TAGS, default_params, inline_png, params_file

_PRE = default_params().params.pretrain
CHANCE = 0.125



class PretrainRunConfig(dg.Config):
    """Launchpad settings; defaults are params.yaml's ``pretrain``."""

    arch: str = Field(default=_PRE.arch, description="compact | paper | resnet18")
    steps: int = Field(default=_PRE.steps, description="training steps")
    batch_size: int = Field(default=_PRE.batch_size, description="pairs per step (all processes)")
    lr: float = Field(default=_PRE.lr)
    chroma: str = Field(default=_PRE.chroma, description="projection | color_dropping | grayscale | none")
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
def context_encoder(context: dg.AssetExecutionContext, config: PretrainRunConfig, mlflow: MlflowTracking) -> dg.MaterializeResult:
    overrides = [
        f"pretrain.arch={config.arch}",
        f"pretrain.steps={config.steps}",
        f"pretrain.batch_size={config.batch_size}",
        f"pretrain.lr={config.lr}",
        f"pretrain.chroma={config.chroma}",
        *config.overrides,
        *mlflow.overrides(),
    ]
    try:
        settings = load_params(params_file(), overrides)
        result = run_pretrain(settings, resume=config.resume, extra_tags={"dagster_run_id": context.run.run_id},
                              progress=False)
    except UserError as exc:
        raise dg.Failure(description=str(exc)) from None
    metadata = {
        "encoder": dg.MetadataValue.path(str(result.encoder)),
        "reports": dg.MetadataValue.path(str(result.reports["metrics"].parent)),
        "held_out_accuracy": result.held_out_accuracy,
        "chance_accuracy": CHANCE,
        "steps": result.steps,
        "pairs_per_second": result.pairs_per_second,
        "train_images": result.train_images,
        "held_out_images": result.held_out_images,
        "skipped_images": result.skipped_images,
        "data_version": result.data_version,
        "registered_version": result.registered_version or "tracking off",
        "mlflow_run_id": result.mlflow_run_id or "tracking off",
        "curves": dg.MetadataValue.md(inline_png(result.reports["curves"])),
        "confusion": dg.MetadataValue.md(inline_png(result.reports["confusion"])),
        "pairs": dg.MetadataValue.md(inline_png(result.reports["pairs"])),
    }
    url = mlflow.run_url(result.mlflow_run_id, tracking_uri(settings))
    if url:
        metadata["mlflow_run"] = dg.MetadataValue.url(url)
    return dg.MaterializeResult(metadata=metadata)


@dg.asset_check(asset=context_encoder, blocking=True, description="held-out pretext accuracy is above chance (12.5 %)")
def context_encoder_beats_chance(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    event = context.instance.get_latest_materialization_event(context_encoder.key)
    if event is None or event.asset_materialization is None:
        return dg.AssetCheckResult(passed=False, metadata={"error": "context_encoder has not been materialised"})
    reports = Path(event.asset_materialization.metadata["reports"].value)
    metrics = json.loads((reports / "metrics.json").read_text())
    accuracy, pairs = metrics["held_out_accuracy"], metrics.get("eval_pairs", 0)
    # two binomial standard errors above chance, so a lucky untrained net does not pass
    margin = 2 * (CHANCE * (1 - CHANCE) / max(pairs, 1)) ** 0.5
    return dg.AssetCheckResult(
        passed=bool(accuracy > CHANCE + margin),
        metadata={"held_out_accuracy": accuracy, "threshold": CHANCE + margin, "eval_pairs": pairs},
    )
