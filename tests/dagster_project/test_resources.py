"""Resources: overrides they add, an unreachable MLflow server failing the step before any work."""

import socket

import dagster as dg

from dagster_project.defs.resources import ComputeDevice, Device, MlflowTracking, ObjectStorage
from dagster_project.defs.synth import synth
from tests.conftest import dagster_resources, write_params


def test_overrides():
    assert ComputeDevice().overrides() == [] and ObjectStorage().overrides() == []
    assert ComputeDevice(device=Device.cpu).overrides() == ["pretrain.device=cpu", "features.device=cpu", "detection.device=cpu"]
    assert ObjectStorage(s3_endpoint_url="http://127.0.0.1:9000").overrides() == ["storage.s3_endpoint_url=http://127.0.0.1:9000"]
    assert MlflowTracking(experiment="e").overrides() == ["tracking.experiment=e"]


def test_unreachable_mlflow_server_fails_the_step_before_the_stage_runs(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("CTX_PARAMS", str(write_params(tmp_path, tracking={"enabled": True})))
    result = dg.materialize([synth], raise_on_error=False,
                            resources=dagster_resources(mlflow=MlflowTracking(tracking_uri=f"http://127.0.0.1:{port}")))
    assert not result.success
    failures = [e for e in result.all_events if e.is_failure]
    assert any("is unreachable" in str(e.event_specific_data) for e in failures)
    assert not (tmp_path / "data").exists()  # nothing was generated
