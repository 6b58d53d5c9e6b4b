"""Fault 3 of issue 18: with ``dvc repro`` holding DVC's repository lock, the ``dvc commit``
after a Dagster asset failed silently (``--quiet`` hid the lock message, so it was never
retried) and Dagster reported success with a stale ``dvc.lock``.

Now the commit waits for the lock (bounded) and records the stage once it is free; when
the lock stays held, the commit raises naming the stage and DVC's reason, and the
Dagster step fails instead of succeeding.
"""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from ctx_core.config import load_params
from ctx_core.dvc_sync import commit_stage
from ctx_core.errors import UserError
from dagster_project.defs.resources import DvcLock, MlflowTracking
from dagster_project.stage import finish
from tests.conftest import ROOT

# Holds DVC's repository lock the way a running `dvc repro` does (DVC's own Lock class).
HOLD = """
import sys, time
from dvc.lock import make_lock
lock = make_lock(sys.argv[1], tmp_dir=sys.argv[2])
lock.lock()
print("locked", flush=True)
time.sleep(float(sys.argv[3]))
lock.unlock()
"""


@pytest.fixture
def dvc_project(tmp_path) -> Path:
    """A DVC project with params.yaml and one stage, ``synth``, whose output exists."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"synth": {"cmd": "ctx synth", "outs": ["out.txt"]}}}))
    (tmp_path / "out.txt").write_text("images\n")
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    return tmp_path


def _hold_lock(root: Path, seconds: float) -> subprocess.Popen:
    tmp = root / ".dvc" / "tmp"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp / "lock"), str(tmp), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _locked_outs(root: Path) -> list[str]:
    lock = root / "dvc.lock"
    if not lock.is_file():
        return []
    return [o["path"] for o in yaml.safe_load(lock.read_text())["stages"]["synth"]["outs"]]


def test_the_commit_waits_for_a_running_dvc_and_then_records_the_stage(dvc_project):
    holder = _hold_lock(dvc_project, 6)
    started = time.monotonic()
    record = commit_stage(load_params(dvc_project / "params.yaml"), "synth", lock_wait=60)
    holder.wait()
    assert record.committed and time.monotonic() - started >= 4
    assert _locked_outs(dvc_project) == ["out.txt"]


def test_a_lock_held_past_the_wait_fails_naming_the_stage_and_dvcs_reason(dvc_project):
    holder = _hold_lock(dvc_project, 30)
    try:
        started = time.monotonic()
        with pytest.raises(UserError) as err:
            commit_stage(load_params(dvc_project / "params.yaml"), "synth", lock_wait=3)
        assert time.monotonic() - started < 25
    finally:
        holder.kill()
        holder.wait()
    message = str(err.value)
    assert message.startswith(f"dvc commit synth failed in {dvc_project}")
    assert "Unable to acquire lock" in message and "run `dvc commit synth`" in message
    assert "\n" not in message
    assert _locked_outs(dvc_project) == []


def test_the_dagster_step_fails_instead_of_succeeding_with_a_stale_dvc_lock(dvc_project, monkeypatch):
    monkeypatch.setenv("CTX_PARAMS", str(dvc_project / "params.yaml"))
    settings = load_params(dvc_project / "params.yaml")

    @dg.asset(name="synth")
    def synth_outputs(context: dg.AssetExecutionContext, dvc: DvcLock) -> dg.MaterializeResult:
        return finish(context, settings, "synth", None, MlflowTracking(), dvc, {})

    holder = _hold_lock(dvc_project, 30)
    try:
        result = dg.materialize([synth_outputs], resources={"dvc": DvcLock(lock_wait_s=2)}, raise_on_error=False)
    finally:
        holder.kill()
        holder.wait()
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failure.step_failure_data.user_failure_data.description.startswith("dvc commit synth failed")
    assert _locked_outs(dvc_project) == []

    # with the lock free, the same materialisation records the stage
    result = dg.materialize([synth_outputs], resources={"dvc": DvcLock(lock_wait_s=2)})
    assert result.success and _locked_outs(dvc_project) == ["out.txt"]
    assert result.asset_materializations_for_node("synth")[0].metadata["dvc_lock"].value == "dvc commit synth: dvc.lock updated"
