"""Two-process DDP pretraining on the CPU (gloo), launched by torchrun as a user would."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import write_params

pytestmark = pytest.mark.slow


def test_torchrun_two_processes_gloo(synth_root, tmp_path):
    params = write_params(tmp_path, pretrain={
        "input": str(synth_root), "steps": 4, "batch_size": 16, "warmup_steps": 1, "log_every": 2,
        "checkpoint_every": 2, "workers": 0, "eval_pairs": 32, "pairs_per_grid": 8, "held_out_fraction": 0.25,
        "amp": False,
    }, tracking={"enabled": True})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "ctx_core.cli", "pretrain", "--params", str(params), "--json"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # only rank 0 reports, writes the encoder and logs to MLflow
    assert proc.stdout.count('"encoder"') == 1
    assert json.loads(proc.stdout[proc.stdout.index("{"):])["steps"] == 4
    assert (tmp_path / "models/context/encoder.pt").is_file()
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ctx-pipeline").experiment_id])
    assert len(runs) == 1 and runs[0].data.params["world_size"] == "2"
