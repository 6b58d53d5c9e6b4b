"""``dvc_lock_sensor``: what ``dvc repro`` produced shows up in Dagster.

Each DVC stage is one asset, of the same name (the stage table's). When a
stage's outputs in ``dvc.lock`` differ from what the asset's latest
materialisation recorded (``dvc_lock_fingerprint``), the sensor reports a
materialisation of that asset, runless, with the lock's hashes as metadata,
so the UI shows outputs made outside Dagster as materialised. While a
Dagster run is in progress it waits: assets record their own lock entries as
they finish.
"""

import dagster as dg

from ctx_core.dvc_sync import lock_fingerprints
from dagster_project.settings import params_file
from dagster_project.stage import asset_for_stage, latest_metadata


def lock_events(instance: dg.DagsterInstance) -> list[dg.AssetMaterialization]:
    """Materialisations to report for stages whose dvc.lock outputs Dagster has not seen."""
    root = params_file().parent
    events = []
    for stage, fingerprint in sorted(lock_fingerprints(root).items()):
        key = asset_for_stage(stage)
        if key is None or latest_metadata(instance, key).get("dvc_lock_fingerprint") == fingerprint:
            continue
        events.append(dg.AssetMaterialization(
            asset_key=key,
            description=f"outputs of DVC stage {stage!r} as recorded in dvc.lock (made by `dvc repro`)",
            metadata={"dvc_stage": stage, "dvc_lock_fingerprint": fingerprint, "source": "dvc.lock",
                      "dvc_lock": dg.MetadataValue.path(str(root / "dvc.lock"))},
        ))
    return events


@dg.sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Reports outputs made by `dvc repro` (read from dvc.lock) as materialisations.")
def dvc_lock_sensor(context: dg.SensorEvaluationContext):
    busy = context.instance.get_runs_count(dg.RunsFilter(statuses=[
        dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]))
    if busy:
        return dg.SkipReason(f"{busy} Dagster run(s) in progress; they record their own dvc.lock entries")
    events = lock_events(context.instance)
    if not events:
        return dg.SkipReason("dvc.lock holds nothing Dagster has not seen")
    return dg.SensorResult(asset_events=events)
