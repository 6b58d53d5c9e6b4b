"""The synth stage's MLflow run: params, metrics, lineage tags and pictures."""

import mlflow

from ctx_core.config import load_params
from ctx_core.fsutil import dvc_dir_hash
from ctx_core.synth.run import run_synth
from tests.conftest import write_params


def test_synth_logs_a_tagged_mlflow_run(tmp_path):
    params = write_params(
        tmp_path,
        data={"synth": {"out": "data/s", "reports": "reports/s", "images": 12}},
        tracking={"enabled": True},
    )
    result = run_synth(load_params(params), extra_tags={"dagster_run_id": "abc"}, progress=False)
    assert (tmp_path / "mlruns.db").is_file()  # the default store sits beside the params file

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    run = client.get_run(result.mlflow_run_id)
    tags = run.data.tags
    assert tags["stage"] == "synth" and tags["dagster_run_id"] == "abc"
    assert tags["data_version"] == dvc_dir_hash(tmp_path / "data/s") == result.data_version
    assert tags["git_commit"] and len(tags["params_hash"]) == 16
    assert run.data.params["images"] == "12"
    assert run.data.metrics["images"] == 12 and run.data.metrics["images_per_second"] > 0
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "synth")}
    assert {"synth/montage.png", "synth/class_histogram.png", "synth/class_counts.csv"} <= logged
    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())


def test_each_stage_run_uses_its_own_store_in_one_process(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for name in ("one", "two"):
        params = write_params(tmp_path / name, data={"synth": {"images": 3}}, tracking={"enabled": True})
        run_synth(load_params(params), progress=False)
    for name in ("one", "two"):
        client = mlflow.MlflowClient(f"sqlite:///{tmp_path / name / 'mlruns.db'}")
        exp = client.get_experiment_by_name("ctx-pipeline")
        assert len(client.search_runs([exp.experiment_id])) == 1
