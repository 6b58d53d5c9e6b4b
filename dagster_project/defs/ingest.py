"""``ingest``: the normalised image store every later stage reads, written by
``ctx_core.ingest``; ``new_images_sensor`` re-ingests when the source changes."""

from pathlib import Path

import dagster as dg

from ctx_core.errors import UserError
from ctx_core.ingest.fingerprint import source_fingerprint
from ctx_core.ingest.run import run_ingest
from ctx_core.store.layout import verify_store
from dagster_project.defs.resources import DvcLock, MlflowTracking, ObjectStorage
from dagster_project.settings import inline_png
from dagster_project.stage import (
    LaunchpadConfig, asset_key, finish, latest_metadata, launchpad, param, require_upstream, running, stage_asset,
    stage_settings,
)


class IngestRunConfig(LaunchpadConfig):
    """Launchpad settings of ``data.ingest``; an empty field keeps the params file's value."""

    source: str | None = param("data.ingest.source", "folder, VOC root, .tar/.tar.gz/.tgz/.zip or s3://bucket/prefix")
    out: str | None = param("data.ingest.out", "store folder")
    max_pixels: int | None = param("data.ingest.max_pixels", "images above this many pixels are downscaled")


@dg.asset(**stage_asset("ingest"), deps=[asset_key("synth")], kinds={"python", "parquet"})
def ingest(context: dg.AssetExecutionContext, config: IngestRunConfig, mlflow: MlflowTracking,
           storage: ObjectStorage, dvc: DvcLock) -> dg.MaterializeResult:
    settings = stage_settings(launchpad(config), mlflow, storage)
    cfg = settings.params.data.ingest
    if not cfg.source.startswith("s3://") and settings.path(cfg.source) == settings.path(settings.params.data.synth.out):
        require_upstream(settings.path(cfg.source), "synth", "the ingest source")
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


@dg.asset_check(asset=ingest, blocking=True, description="manifest and annotations match their pandera schemas")
def ingest_tables_valid(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    store = latest_metadata(context.instance, ingest.key).get("path")
    if store is None:
        return dg.AssetCheckResult(passed=False, metadata={"error": "no materialisation of ingest in Dagster names its store"})
    try:
        counts = verify_store(Path(store))
    except UserError as exc:
        return dg.AssetCheckResult(passed=False, metadata={"store": store, "error": str(exc)})
    return dg.AssetCheckResult(passed=True, metadata={"store": store, **counts})


reingest_job = dg.define_asset_job(
    "reingest", selection=dg.AssetSelection.assets(ingest),
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
    if fingerprint == latest_metadata(context.instance, ingest.key).get("source_fingerprint"):
        return dg.SkipReason(f"{settings.params.data.ingest.source}: {files} files, unchanged since the last ingest")
    return dg.RunRequest(run_key=f"source-{fingerprint}", tags={"ctx/source_fingerprint": fingerprint})
