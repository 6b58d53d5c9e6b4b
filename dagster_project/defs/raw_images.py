"""``raw_images``: the normalised image store every later stage reads, written by
``ctx_core.ingest``; ``new_images_sensor`` re-ingests when the source changes."""

from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from ctx_core.errors import UserError
from ctx_core.ingest.fingerprint import source_fingerprint
from ctx_core.ingest.run import run_ingest
from ctx_core.ingest.schemas import validate_tables
from dagster_project.defs.resources import DvcLock, MlflowTracking, ObjectStorage
from dagster_project.defs.synthetic_dataset import synthetic_voc
from dagster_project.settings import default_params, inline_png
from dagster_project.stage import finish, launchpad, require_upstream, running, stage_settings

_INGEST = default_params().params.data.ingest
_SYNTH_OUT = default_params().params.data.synth.out


class IngestRunConfig(dg.Config):
    """Launchpad settings; defaults are params.yaml's ``data.ingest``."""

    source: str = Field(default=_INGEST.source, description="folder, VOC root, .tar/.tar.gz/.tgz/.zip or s3://bucket/prefix")
    out: str = Field(default=_INGEST.out, description="store folder")
    max_pixels: int = Field(default=_INGEST.max_pixels, description="images above this many pixels are downscaled")
    overrides: list[str] = Field(default=[], description="extra section.key=value settings")


@dg.asset(
    deps=[synthetic_voc],
    group_name="data",
    kinds={"python", "parquet"},
    description="Normalised RGB image store with manifest, VOC annotations and quarantine report (ctx ingest).",
)
def raw_images(context: dg.AssetExecutionContext, config: IngestRunConfig, mlflow: MlflowTracking,
               storage: ObjectStorage, dvc: DvcLock) -> dg.MaterializeResult:
    settings = stage_settings(launchpad(config, {
        "source": "data.ingest.source", "out": "data.ingest.out", "max_pixels": "data.ingest.max_pixels",
    }), mlflow, storage)
    cfg = settings.params.data.ingest
    if not cfg.source.startswith("s3://") and settings.path(cfg.source) == settings.path(settings.params.data.synth.out):
        require_upstream(settings.path(cfg.source), "synthetic_voc", "the ingest source")
    with running(context, settings, "ingest"):
        fingerprint, files = source_fingerprint(settings)
        result = run_ingest(settings, force=True, extra_tags={"dagster_run_id": context.run.run_id}, progress=False)
    counts = result.summary()["counts"]
    metadata = {
        "path": dg.MetadataValue.path(str(result.store)),
        "source": cfg.source,
        "source_fingerprint": fingerprint,
        "source_files": files,
        "data_version": result.data_version,
        "images": len(result.ingested),
        "objects": result.objects,
        "quarantined": len(result.quarantined),
        "ignored_files": result.ignored_files,
        **{f"images_{k}": v for k, v in result.split_sizes.items()},
        "quarantined_by_reason": dg.MetadataValue.json(counts["quarantined_by_reason"]),
        "quarantine_sample": dg.MetadataValue.md(
            "\n".join(f"- `{r.source}`: {r.reason}" for r in result.quarantined[:20]) or "nothing quarantined"
        ),
        "classes": dg.MetadataValue.json(result.classes),
        "montage": dg.MetadataValue.md(inline_png(result.montage)),
    }
    return finish(context, settings, "ingest", result.mlflow_run_id, mlflow, dvc, metadata, result.data_version)


@dg.asset_check(asset=raw_images, blocking=True, description="manifest and annotations match their pandera schemas")
def raw_images_tables_valid(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    event = context.instance.get_latest_materialization_event(raw_images.key)
    if event is None or event.asset_materialization is None:
        return dg.AssetCheckResult(passed=False, metadata={"error": "raw_images has not been materialised"})
    store = event.asset_materialization.metadata["path"].value
    root = Path(store)
    try:
        manifest = pd.read_parquet(root / "manifest.parquet")
        annotations = pd.read_parquet(root / "annotations.parquet")
        classes = [c for c in (root / "classes.txt").read_text().splitlines() if c]
        validate_tables(manifest, annotations, classes)
    except (UserError, OSError) as exc:
        return dg.AssetCheckResult(passed=False, metadata={"store": store, "error": str(exc)})
    on_disk = {p.stem for p in (root / "images").glob("*.jpg")}
    listed = set(manifest["image_id"])
    if on_disk != listed:
        return dg.AssetCheckResult(passed=False, metadata={
            "store": store,
            "error": f"{len(listed - on_disk)} manifest rows without an image file, {len(on_disk - listed)} files without a row",
        })
    return dg.AssetCheckResult(
        passed=True, metadata={"store": store, "images": len(manifest), "objects": len(annotations)}
    )


reingest_job = dg.define_asset_job(
    "reingest", selection=dg.AssetSelection.assets(raw_images),
    description="Re-ingest the configured source into the store (started by new_images_sensor).",
)


@dg.sensor(job=reingest_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED,
           description="Re-ingests when images in data.ingest.source are added, changed or removed.")
def new_images_sensor(context: dg.SensorEvaluationContext, storage: ObjectStorage):
    settings = stage_settings([], storage)
    try:
        fingerprint, files = source_fingerprint(settings)
    except UserError as exc:
        return dg.SkipReason(f"source unreadable: {exc}")
    event = context.instance.get_latest_materialization_event(raw_images.key)
    last = None
    if event is not None and event.asset_materialization is not None:
        entry = event.asset_materialization.metadata.get("source_fingerprint")
        last = entry.value if entry is not None else None
    if fingerprint == last:
        return dg.SkipReason(f"{settings.params.data.ingest.source}: {files} files, unchanged since the last ingest")
    return dg.RunRequest(run_key=f"source-{fingerprint}", tags={"ctx/source_fingerprint": fingerprint})
