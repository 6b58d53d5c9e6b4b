"""An MLflow server that does not answer is reported at once, before any work; one that goes
away mid-stage costs the stage nothing (metrics queued, kept and sent later, one warning)."""

import json
import os
import socket
import threading
import time
from types import SimpleNamespace

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from ctx_core.config import load_params
from ctx_core.errors import UserError
from ctx_core.tracking import (HTTP_LIMITS, PENDING, MetricSender, Row, StageRun, check_reachable, is_outage,
                               settle_pending, stage_run)
from tests.conftest import write_params


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket closes


def test_unreachable_server_fails_fast_naming_it(tmp_path):
    uri = f"http://127.0.0.1:{closed_port()}"
    settings = load_params(write_params(tmp_path, tracking={"enabled": True, "uri": uri}))
    start = time.monotonic()
    with pytest.raises(UserError, match=f"MLflow tracking server {uri} is unreachable.*tracking.enabled: false"):
        with stage_run(settings, "synth"):
            raise AssertionError("the stage must not start")
    assert time.monotonic() - start < 10  # MLflow's own client would retry for minutes


def test_local_stores_are_not_probed(tmp_path):
    check_reachable(f"sqlite:///{tmp_path / 'x.db'}")
    check_reachable(str(tmp_path / "mlruns"))


# ---------------------------------------------------------------- a server that goes away mid-stage

def rows(steps, key="loss"):
    return [Row(key, float(s), 0, s) for s in steps]


class FlakyServer:
    """A ``send`` that is down (raises ``ConnectionError``) while ``down`` is set, or hangs while ``hang`` is set."""

    def __init__(self):
        self.got: list[Row] = []
        self.down = threading.Event()
        self.hang = threading.Event()
        self.calls = 0

    def send(self, batch):
        self.calls += 1
        while self.hang.is_set():
            time.sleep(0.01)
        if self.down.is_set():
            raise ConnectionError("[Errno 111] Connection refused")
        self.got.extend(batch)


def wait_until(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_adding_metrics_never_waits_on_a_hung_server():
    server = FlakyServer()
    server.hang.set()
    sender = MetricSender(server.send, on_lost=lambda exc, step: None, retry_every=0.05)
    start = time.monotonic()
    for step in range(1, 201):
        sender.add(rows([step]))
    assert time.monotonic() - start < 0.5  # queued, not sent: the step goes on
    start = time.monotonic()
    left = sender.close(timeout=0.3)
    assert time.monotonic() - start < 1.0  # close is bounded too
    assert left and [r.step for r in left] == list(range(left[0].step, 201))
    server.hang.clear()


def test_an_outage_is_reported_once_and_the_backlog_sent_in_order_when_the_server_is_back():
    server = FlakyServer()
    lost, back = [], []
    sender = MetricSender(server.send, on_lost=lambda exc, step: lost.append((type(exc).__name__, step)),
                          on_back=lambda: back.append(True), retry_every=0.05)
    sender.add(rows([1, 2]))
    wait_until(lambda: len(server.got) == 2)
    server.down.set()
    for step in range(3, 30):
        sender.add(rows([step]))
        time.sleep(0.002)
    wait_until(lambda: sender.lost is not None)
    calls = server.calls
    time.sleep(0.2)
    assert server.calls - calls <= 6  # retried every retry_every, not at every add
    assert lost == [("ConnectionError", 3)]  # once, naming the first step the server did not get
    server.down.clear()
    wait_until(lambda: len(server.got) == 29)
    assert [r.step for r in server.got] == list(range(1, 30)) and back == [True]
    assert sender.close(timeout=1) == [] and sender.lost is None


def test_close_gives_back_what_a_dead_server_did_not_get():
    server = FlakyServer()
    server.down.set()
    lost = []
    sender = MetricSender(server.send, on_lost=lambda exc, step: lost.append(step), retry_every=60)
    sender.add(rows([5, 6, 7]))
    wait_until(lambda: lost == [5])
    start = time.monotonic()
    assert [r.step for r in sender.close(timeout=2)] == [5, 6, 7]  # one more try at close, not a 60 s wait
    assert time.monotonic() - start < 1.5


def test_a_refused_request_is_an_error_not_an_outage():
    refused = MlflowException("bad metric", error_code=INVALID_PARAMETER_VALUE)
    assert not is_outage(refused) and is_outage(ConnectionError()) and is_outage(MlflowException("API request failed"))

    def send(batch):
        raise refused

    sender = MetricSender(send, on_lost=lambda exc, step: pytest.fail("not an outage"))
    sender.add(rows([1]))
    wait_until(lambda: sender.error is not None)
    with pytest.raises(MlflowException, match="bad metric"):
        sender.add(rows([2]))


def test_stage_runs_bound_mlflow_http_retries_and_restore_the_environment(tmp_path, monkeypatch):
    settings = load_params(write_params(tmp_path, tracking={"enabled": True}))
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")  # the user's value wins
    with stage_run(settings, "synth") as run:
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == HTTP_LIMITS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"
        run.log_metrics({"loss": 1.5}, step=3)
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ and os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"
    assert "MLFLOW_TRACKING_URI" not in os.environ
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED" and got.data.metrics == {"loss": 1.5}


def test_a_pending_run_is_sent_and_failed_by_the_next_stage(tmp_path, capsys):
    settings = load_params(write_params(tmp_path, tracking={"enabled": True}))
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("lost")
    lost = client.create_run(experiment).info.run_id  # RUNNING: its server went away
    pending = settings.path(PENDING)
    pending.mkdir(parents=True)
    (pending / f"{lost}.json").write_text(json.dumps({
        "uri": uri, "run_id": lost, "stage": "pretrain", "reason": "server stopped answering at step 4",
        "rows": [list(r) for r in rows([4, 6])]}))
    (pending / "other.json").write_text(json.dumps({"uri": "http://elsewhere", "run_id": "x", "stage": "s",
                                                    "reason": "r", "rows": []}))
    settle_pending(pending, uri)
    run = client.get_run(lost)
    assert run.info.status == "FAILED" and run.data.tags["tracking_lost"] == "server stopped answering at step 4"
    assert [m.step for m in client.get_metric_history(lost, "loss")] == [4, 6]
    assert sorted(p.name for p in pending.iterdir()) == ["other.json"]  # another server's record waits for it
    assert f"MLflow run {lost} (pretrain) had lost its server" in capsys.readouterr().err


def test_a_stage_run_whose_server_is_gone_warns_once_skips_the_rest_and_keeps_its_metrics(tmp_path, monkeypatch,
                                                                                          capsys):
    for key, value in HTTP_LIMITS.items():
        monkeypatch.setenv(key, value)
    uri = f"http://127.0.0.1:{closed_port()}"
    run = StageRun(SimpleNamespace(info=SimpleNamespace(run_id="r1")), uri, "pretrain", tmp_path / "pending")
    start = time.monotonic()
    for step in (2, 4, 6):
        run.log_metrics({"loss": 1.0 / step}, step=step)
    assert time.monotonic() - start < 0.5  # queued: the training step does not wait
    wait_until(lambda: not run.connected, timeout=30)
    run.log_artifact(tmp_path / "encoder.pt", "encoder")  # skipped, not raised
    run.set_tags({"registered_version": "1"})
    run.finish("FINISHED")
    assert time.monotonic() - start < 30
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ctx: warning: MLflow tracking server {uri} stopped answering at step 2")
    record = json.loads((tmp_path / "pending" / "r1.json").read_text())
    assert record["status"] == "FAILED" and record["reason"].startswith("stopped answering at step 2: ")
    assert [(key, step) for key, _, _, step in record["rows"]] == [("loss", 2), ("loss", 4), ("loss", 6)]
