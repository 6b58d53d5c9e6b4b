"""The MLflow server dies mid-training: the stage finishes in bounded time with one warning line,
writes its encoder and reports over every step, and no run is left RUNNING; a killed run,
resumed, links to the run it continues and its curves start at step 0.

A real ``mlflow server --workers 1`` on a free loopback port (SQLite backend) is killed by
process group when the training's checkpoint at ``KILL_AT`` appears, and later restarted on
the same port and database, as a user would bring it back.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from ctx_core.config import load_params
from ctx_core.tracking import stage_run
from tests.conftest import BIN, free_port, wait_http, write_params

STEPS = 40
KILL_AT = 10  # a checkpoint step: the server dies once it is written
PRETRAIN = {"steps": STEPS, "batch_size": 16, "warmup_steps": 1, "checkpoint_every": 5, "log_every": 2,
            "workers": 0, "eval_pairs": 32, "pairs_per_grid": 8, "held_out_fraction": 0.25, "diagnostic_steps": 0}
PENDING = ".ctx-tracking/pending"  # ctx_core.tracking.PENDING, spelled out so that this file imports on older code
BOUND_S = 120  # seconds; before the fix one metrics call to the dead server blocked for 245 s (two: ~8 min)


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with a SQLite backend and served artifacts; killed and restarted by pid."""

    def __init__(self, home: Path):
        self.home, self.port = home, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.home / "server.log", "a")
        self.proc = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{self.home / 'mlflow.db'}",
             "--artifacts-destination", str(self.home / "artifacts")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_http(f"{self.uri}/health", self.proc, "mlflow server", timeout=300)  # minutes on a loaded machine

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the whole group: the server and its worker
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def module_server(tmp_path_factory):
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield srv
    finally:
        srv.kill()


@pytest.fixture
def server(module_server):
    """The module's server, running (a test that kills it restarts it on the same port and database)."""
    if module_server.proc is None or module_server.proc.poll() is not None:
        module_server.start()  # the first start creates the database: the slow one
    return module_server


def pretrain(params: Path, *args: str, until: Path | None = None, then=None) -> tuple[subprocess.CompletedProcess, float]:
    """``ctx pretrain --params params --json *args``; once ``until`` exists, call ``then(proc)``. Returns the run and its seconds."""
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "ctx_core.cli", "pretrain", "--params", str(params), "--json",
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    if until is not None:
        while not until.exists() and proc.poll() is None and time.monotonic() - start < BOUND_S:
            time.sleep(0.02)
        then(proc)
    try:
        out, err = proc.communicate(timeout=max(1.0, BOUND_S - (time.monotonic() - start)))
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"ctx pretrain still running after {BOUND_S} s (the MLflow outage hangs it):\n{err[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), time.monotonic() - start


def summary(proc: subprocess.CompletedProcess) -> dict:
    """The ``--json`` summary (MLflow prints "View run" lines before it when a run ends)."""
    return json.loads(proc.stdout[proc.stdout.index("{"):])


def curve_steps(reports: Path) -> list[int]:
    with open(reports / "curves.csv") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


def runs_of(uri: str) -> list:
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("ctx-pipeline")
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def test_a_dead_tracking_server_costs_the_training_nothing(synth_root, tmp_path, server):
    params = write_params(tmp_path / "p", tracking={"enabled": True, "uri": server.uri}, pretrain={
        **PRETRAIN, "input": str(synth_root), "out": str(tmp_path / "m"), "reports": str(tmp_path / "r")})
    proc, seconds = pretrain(params, until=tmp_path / "m" / "checkpoints" / f"step-{KILL_AT:07d}.pt",
                             then=lambda p: server.kill())
    assert server.proc.poll() is not None, "the server was not killed before training ended"

    assert proc.returncode == 0, proc.stderr[-3000:]
    assert seconds < BOUND_S
    assert "Traceback" not in proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("ctx: warning: MLflow tracking server "), proc.stderr
    assert server.uri in warnings[0] and "stopped answering at step" in warnings[0]
    result = summary(proc)
    assert Path(result["encoder"]).is_file() and result["steps"] == STEPS and result["registered_version"] is None
    assert curve_steps(tmp_path / "r") == list(range(2, STEPS + 1, 2))  # the reports cover every step
    run_id = result["mlflow_run_id"]
    record = json.loads((tmp_path / "p" / PENDING / f"{run_id}.json").read_text())
    assert record["uri"] == server.uri and record["rows"]  # what the server did not get, kept

    # the server comes back: the next stage sends the kept metrics and ends the run FAILED, not RUNNING
    server.start()
    assert mlflow.MlflowClient(server.uri).get_run(run_id).info.status == "RUNNING"
    with stage_run(load_params(params), "synth"):
        pass
    client = mlflow.MlflowClient(server.uri)
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and "stopped answering at step" in run.data.tags["tracking_lost"]
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == list(range(2, STEPS + 1, 2))
    assert not (tmp_path / "p" / PENDING / f"{run_id}.json").exists()


def test_a_killed_run_resumed_links_to_it_and_its_curves_start_at_step_0(synth_root, tmp_path, server):
    params = write_params(tmp_path / "p", tracking={"enabled": True, "uri": server.uri}, pretrain={
        **PRETRAIN, "input": str(synth_root), "out": str(tmp_path / "m"), "reports": str(tmp_path / "r")})
    killed, _ = pretrain(params, until=tmp_path / "m" / "checkpoints" / f"step-{KILL_AT:07d}.pt",
                         then=lambda p: p.send_signal(signal.SIGKILL))
    assert killed.returncode == -signal.SIGKILL
    interrupted = runs_of(server.uri)[-1]
    assert interrupted.info.status == "RUNNING"  # nothing ran in the killed process to end it

    resumed, seconds = pretrain(params, "--resume")
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr[-3000:]
    assert seconds < BOUND_S
    assert curve_steps(tmp_path / "r") == list(range(2, STEPS + 1, 2))  # from the start, not the resumed step
    client = mlflow.MlflowClient(server.uri)
    run = client.get_run(summary(resumed)["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["resumed_from_run_id"] == interrupted.info.run_id
    old = client.get_run(interrupted.info.run_id)
    assert old.info.status == "KILLED" and old.data.tags["resumed_by_run_id"] == run.info.run_id
