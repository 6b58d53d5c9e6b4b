"""`dvc repro` runs the synth stage through the `ctx` CLI in a fresh git + DVC repository."""

import json
import os
import subprocess

import mlflow
import pytest
import yaml

from ctx_core.config import load_params
from tests.conftest import BIN, ROOT

pytestmark = pytest.mark.slow


def sh(cwd, *cmd):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_dvc_repro_synth_stage(project_copy):
    repo = project_copy
    # DVC reads params.yaml itself (for ${...} and params tracking), so write the smoke profile flat.
    smoke = load_params(ROOT / "params.smoke.yaml").params.model_dump(mode="json")
    smoke["data"]["synth"]["images"] = 16
    (repo / "params.yaml").write_text(yaml.safe_dump(smoke))
    sh(repo, "git", "init", "-q")
    sh(repo, "dvc", "init", "-q")
    sh(repo, "dvc", "config", "core.analytics", "false")
    sh(repo, "dvc", "repro", "synth")

    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    outs = {o["path"]: o for o in lock["stages"]["synth"]["outs"]}
    data_version = outs["data/synth-smoke"]["md5"]
    assert data_version.endswith(".dir")
    assert len(list((repo / "data/synth-smoke/JPEGImages").glob("*.jpg"))) == 16

    # the MLflow run carries the same data version DVC recorded
    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlruns.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ctx-pipeline").experiment_id])
    assert [r.data.tags["data_version"] for r in runs] == [data_version]

    assert "up to date" in sh(repo, "dvc", "status", "synth")
    metrics = json.loads(sh(repo, "dvc", "metrics", "show", "--json"))
    flat = json.dumps(metrics)
    assert '"images": 16' in flat
    # changing a tracked param makes the stage stale
    sh(repo, "dvc", "repro", "synth", "--dry")
    smoke["data"]["synth"]["seed"] = 9
    (repo / "params.yaml").write_text(yaml.safe_dump(smoke))
    assert "modified:           data.synth" in sh(repo, "dvc", "status", "synth")
