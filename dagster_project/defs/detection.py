"""Detection: one Faster R-CNN asset per encoder init (``finetune/<init>``), the
inits' per-class AP side by side (``detection_table``), and the registry
comparison that moves the ``champion`` alias (``compare``).
They call ``ctx_core.detection`` and ``ctx_core.compare``; the outputs are
those of ``ctx finetune``, ``ctx detection_table`` and ``ctx compare``."""

import math

import dagster as dg
from pydantic import Field

from ctx_core.checks import detector_problem
from ctx_core.compare import run_compare
from ctx_core.config import load_params
from ctx_core.detection.report import ap_table_markdown
from ctx_core.detection.run import run_detection_table, run_finetune
from ctx_core.stages import stage
from ctx_core.tracking import tracking_uri
from dagster_project.defs.resources import ComputeDevice, DvcLock, MlflowTracking
from dagster_project.settings import GPU_TAGS, inline_png, params_file
from dagster_project.stage import (
    LaunchpadConfig, asset_key, finish, latest_metadata, launchpad, param, require_upstream, running, stage_asset,
    stage_settings,
)

# The one params value read at import, because it shapes the graph: one finetune asset per
# item of detection.inits (the stage's foreach key), as dvc.yaml has one finetune@<init>
# stage per item. Every other value is read when a run starts.
INITS: tuple[str, ...] = tuple(load_params(params_file()).params.detection.inits)


class FinetuneRunConfig(LaunchpadConfig):
    """Launchpad settings of ``detection`` (the same budget for every init); an empty
    field keeps the params file's value."""

    encoder: str | None = param("detection.encoder", "encoder.pt path, models:/name@alias or models:/name/version")
    steps: int | None = param("detection.steps", "training steps (the same for every init)")
    seeds: list[int] | None = param("detection.seeds", "one detector per seed (the same seeds for every init)")
    batch_size: int | None = param("detection.batch_size", "images per step")
    lr: float | None = param("detection.lr", "learning rate after warmup")
    resume: bool = Field(default=False, description="continue from this init's newest checkpoint")


def _finetune_asset(init: str) -> dg.AssetsDefinition:
    # every init reads the encoder: its weights, or for scratch its contract (the same
    # architecture with fresh weights), as DVC's finetune stages all list encoder.pt
    deps = [asset_key("ingest"), asset_key("pretrain")]
    dvc_stage = stage("finetune").dvc_stage(init)

    @dg.asset(**stage_asset("finetune", init), deps=deps, kinds={"pytorch", "mlflow"}, pool="gpu", op_tags=GPU_TAGS)
    def _finetune(context: dg.AssetExecutionContext, config: FinetuneRunConfig, mlflow: MlflowTracking,
                  compute: ComputeDevice, dvc: DvcLock) -> dg.MaterializeResult:
        settings = stage_settings(launchpad(config), mlflow, compute)
        cfg = settings.params.detection
        require_upstream(settings.path(cfg.input), "ingest", "the image store")
        if not cfg.encoder.startswith("models:/"):
            require_upstream(settings.path(cfg.encoder), "pretrain", "the encoder")
        with running(context, settings, dvc_stage):
            summary = run_finetune(settings, init, resume=config.resume,
                                   extra_tags={"dagster_run_id": context.run.run_id}, progress=False)
        first = summary.runs[0]
        row = {init: {**summary.ap, "mAP": summary.test.mean}}
        metadata = {
            "init": init,
            "mAP": summary.test.mean,
            "mAP_interval": summary.test.format(100),
            "n_seeds": summary.test.n,
            "mAP_per_seed": dg.MetadataValue.json({str(k): v for k, v in summary.per_seed.items()}),
            "val_mAP": summary.val.mean,
            "metric": summary.metric,
            "ap_table": dg.MetadataValue.md(ap_table_markdown(row, list(summary.ap), summary.metric)),
            "pr_curves": dg.MetadataValue.md(inline_png(first.reports["pr_curves"])),
            "detectors": dg.MetadataValue.json({str(r.seed): str(r.detector) for r in summary.runs}),
            "summary": dg.MetadataValue.path(str(summary.metrics)),
            "steps": first.steps,
            "seconds_per_step": sum(r.seconds_per_step for r in summary.runs) / len(summary.runs),
            "train_images": first.train_images,
            "test_images": first.test_images,
            "encoder_version": first.encoder_version,
            "data_version": first.data_version,
            "notes": dg.MetadataValue.md("\n".join(f"- {n}" for n in summary.notes) or "none"),
            "registered_versions": dg.MetadataValue.json(
                {str(r.seed): r.registered_version or "tracking off" for r in summary.runs}),
        }
        result = summary.runs[-1]
        return finish(context, settings, dvc_stage, result.mlflow_run_id, mlflow, dvc, metadata)

    return _finetune


def _finite_map_check(asset: dg.AssetsDefinition) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=asset, name="finite_map", blocking=True,
                    description="mAP is a finite number in [0, 1] (a diverged detector never reaches the comparison)")
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        value = latest_metadata(context.instance, asset.key).get("mAP")
        problem = detector_problem(value if isinstance(value, (int, float)) else None)
        return dg.AssetCheckResult(passed=problem is None,
                                   metadata={"mAP": value if isinstance(value, float) and math.isfinite(value) else str(value),
                                             "problem": problem or "none"})

    return _check


FINETUNE_ASSETS = [_finetune_asset(init) for init in INITS]
FINETUNE_CHECKS = [_finite_map_check(asset) for asset in FINETUNE_ASSETS]


@dg.asset(**stage_asset("detection_table"), deps=FINETUNE_ASSETS, kinds={"python"})
def detection_table(context: dg.AssetExecutionContext, mlflow: MlflowTracking, dvc: DvcLock) -> dg.MaterializeResult:
    settings = stage_settings([], mlflow)
    with running(context, settings, "detection_table"):
        result = run_detection_table(settings)
    metadata = {
        "ap_table": dg.MetadataValue.md(result.markdown.read_text()),
        "chart": dg.MetadataValue.md(inline_png(result.chart)),
        "csv": dg.MetadataValue.path(str(result.csv)),
        "paired_differences": dg.MetadataValue.md("\n".join(f"- {x}" for x in result.lines) or "one init only"),
        "missing_inits": dg.MetadataValue.json(result.missing),
        **{f"mAP_{init}": ci.mean for init, ci in result.intervals.items()},
        **{f"n_{init}": ci.n for init, ci in result.intervals.items()},
    }
    return finish(context, settings, "detection_table", None, mlflow, dvc, metadata)


@dg.asset(**stage_asset("compare"), deps=FINETUNE_ASSETS, kinds={"mlflow"})
def compare(context: dg.AssetExecutionContext, mlflow: MlflowTracking, dvc: DvcLock) -> dg.MaterializeResult:
    settings = stage_settings([], mlflow)
    with running(context, settings, "compare"):
        result = run_compare(settings, extra_tags={"dagster_run_id": context.run.run_id})
    for note in result.notes:
        context.log.warning(note)
    champ = result.champion
    metadata = {
        "comparison": dg.MetadataValue.md(result.markdown.read_text()),
        "chart": dg.MetadataValue.md(inline_png(result.chart)),
        "csv": dg.MetadataValue.path(str(result.csv)),
        "versions": len(result.rows),
        "eligible_versions": sum(r.eligible for r in result.rows),
        "champion_version": champ.version if champ else "none",
        "champion_init": champ.init if champ else "none",
        "champion_mAP": champ.mean_ap if champ else float("nan"),
        "previous_champion": result.previous_champion or "none",
        "alias_moved": result.alias_moved,
        "encoder_champion": result.encoder_champion or "unchanged",
        "groups": len(result.groups),
        "ranked_by": result.ranked_by,
        "champion_group_n": result.champion_group.n if result.champion_group else 0,
        "lead": result.lead_sentence,
        "lead_mean": result.lead.mean if result.lead else float("nan"),
        "lead_low": result.lead.low if result.lead else float("nan"),
        "lead_high": result.lead.high if result.lead else float("nan"),
        "lead_beyond_noise": result.lead_beyond_noise,
        "groups_csv": dg.MetadataValue.path(str(result.groups_csv)),
        "encoder_probe_ranking": result.encoder_sentence,
        "encoder_probe_lead_beyond_noise": result.encoder_lead_beyond_noise,
    }
    uri = tracking_uri(settings)
    if uri.startswith(("http://", "https://")):
        metadata["registry"] = dg.MetadataValue.url(f"{uri.rstrip('/')}/#/models/{result.model}")
    return finish(context, settings, "compare", result.mlflow_run_id, mlflow, dvc, metadata)
