"""``detector``: Faster R-CNN fine-tuned from each encoder init (one partition
per init), and ``detection_table``: the inits' per-class AP side by side.
Both call ``ctx_core.detection``; the outputs are those of ``ctx finetune``
and ``ctx detection-table``."""

import dagster as dg
from pydantic import Field

from ctx_core.config import load_params
from ctx_core.detection.report import ap_table_markdown
from ctx_core.detection.run import run_detection_table, run_finetune
from ctx_core.errors import UserError
from ctx_core.tracking import tracking_uri
from dagster_project.defs.resources import MlflowTracking
from dagster_project.settings import GPU_TAGS, default_params, inline_png, params_file

_DET = default_params().params.detection
INITS = dg.StaticPartitionsDefinition(list(_DET.inits))



class FinetuneRunConfig(dg.Config):
    """Launchpad settings; defaults are params.yaml's ``detection``. The init is the partition."""

    encoder: str = Field(default=_DET.encoder, description="encoder.pt path, models:/name@alias or models:/name/version")
    steps: int = Field(default=_DET.steps, description="training steps (the same for every init)")
    batch_size: int = Field(default=_DET.batch_size, description="images per step")
    lr: float = Field(default=_DET.lr)
    resume: bool = Field(default=False, description="continue from this init's newest checkpoint")
    overrides: list[str] = Field(default=[], description="extra section.key=value settings")


@dg.asset(
    deps=[dg.AssetKey("raw_images"), dg.AssetKey("context_encoder")],
    partitions_def=INITS,
    group_name="detection",
    kinds={"pytorch", "mlflow"},
    pool="gpu",
    op_tags=GPU_TAGS,
    description="Faster R-CNN on the encoder's trunk, fine-tuned and scored with VOC AP per init (ctx finetune).",
)
def detector(context: dg.AssetExecutionContext, config: FinetuneRunConfig, mlflow: MlflowTracking) -> dg.MaterializeResult:
    init = context.partition_key
    overrides = [
        f"detection.encoder={config.encoder}",
        f"detection.steps={config.steps}",
        f"detection.batch_size={config.batch_size}",
        f"detection.lr={config.lr}",
        *config.overrides,
        *mlflow.overrides(),
    ]
    try:
        settings = load_params(params_file(), overrides)
        result = run_finetune(settings, init, resume=config.resume,
                              extra_tags={"dagster_run_id": context.run.run_id}, progress=False)
    except UserError as exc:
        raise dg.Failure(description=str(exc)) from None
    row = {init: {**result.ap, "mAP": result.mean_ap}}
    metadata = {
        "init": init,
        "mAP": result.mean_ap,
        "metric": result.metric,
        "ap_table": dg.MetadataValue.md(ap_table_markdown(row, list(result.ap), result.metric)),
        "pr_curves": dg.MetadataValue.md(inline_png(result.reports["pr_curves"])),
        "detector": dg.MetadataValue.path(str(result.detector)),
        "results": dg.MetadataValue.path(str(result.results_dir)),
        "steps": result.steps,
        "seconds_per_step": result.seconds_per_step,
        "final_loss": result.final_loss,
        "train_images": result.train_images,
        "test_images": result.test_images,
        "encoder_version": result.encoder_version,
        "data_version": result.data_version,
        "notes": dg.MetadataValue.md("\n".join(f"- {n}" for n in result.notes) or "none"),
        "registered_version": result.registered_version or "tracking off",
        "mlflow_run_id": result.mlflow_run_id or "tracking off",
    }
    url = mlflow.run_url(result.mlflow_run_id, tracking_uri(settings))
    if url:
        metadata["mlflow_run"] = dg.MetadataValue.url(url)
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    deps=[detector],
    group_name="detection",
    kinds={"python"},
    description="Per-class AP of every init in the paper's Table 1 layout (ctx detection-table).",
)
def detection_table(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    try:
        result = run_detection_table(load_params(params_file()))
    except UserError as exc:
        raise dg.Failure(description=str(exc)) from None
    metadata = {
        "ap_table": dg.MetadataValue.md(result.markdown.read_text()),
        "csv": dg.MetadataValue.path(str(result.csv)),
        "missing_inits": dg.MetadataValue.json(result.missing),
        **{f"mAP_{init}": row["mAP"] for init, row in result.rows.items()},
    }
    return dg.MaterializeResult(metadata=metadata)
