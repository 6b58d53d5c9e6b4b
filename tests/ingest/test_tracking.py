"""The MLflow run of an ingestion carries the data version as a tag and the manifest as a dataset input."""

import mlflow

from ctx_core.config import load_params
from ctx_core.fsutil import dvc_dir_hash
from ctx_core.ingest.run import run_ingest
from tests.ingest.conftest import ingest_settings


def test_mlflow_run_has_data_version_and_dataset_input(tmp_path, mixed_folder):
    base = ingest_settings(tmp_path, mixed_folder)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    settings = load_params(base.source, ["tracking.enabled=true", f"tracking.uri={uri}",
                                         f"tracking.artifacts={tmp_path / 'artifacts'}"])
    result = run_ingest(settings, extra_tags={"dagster_run_id": "abc"}, progress=False)
    assert result.data_version == dvc_dir_hash(result.store)
    run = mlflow.MlflowClient(uri).get_run(result.mlflow_run_id)
    assert run.data.tags["data_version"] == result.data_version
    assert run.data.tags["stage"] == "ingest" and run.data.tags["dagster_run_id"] == "abc"
    assert run.data.metrics["images"] == len(result.ingested) and run.data.metrics["quarantined"] == len(result.quarantined)
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "raw_images"
    assert dataset_input.dataset.digest == result.data_version.removesuffix(".dir")
    assert result.store.resolve().as_uri() in dataset_input.dataset.source
    artifacts = {f.path for f in mlflow.MlflowClient(uri).list_artifacts(run.info.run_id, "ingest")}
    assert {"ingest/quarantine.json", "ingest/montage.png", "ingest/metrics.json"} <= artifacts
