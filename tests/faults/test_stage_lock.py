"""Fault 6 of issue 18 (exclusivity): two ``ctx pretrain`` at once on the same outputs both
succeeded and the last to finish silently won, writing into one checkpoint folder.

Now a stage's writer holds the stage lock (``ctx_core.stage_lock``) that the Dagster
assets hold too: the second ``ctx`` is refused with one line naming the stage and the
holder's pid, a Dagster materialisation waits a bounded time and then fails saying the
same, and once the holder is gone (even by ``kill -9``) the next run goes through.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg

from ctx_core.stage_lock import lock_path, stage_lock
from dagster_project.defs.pretrain import pretrain
from tests.conftest import BIN, ROOT, dagster_resources, write_params

SMALL = {"batch_size": 16, "warmup_steps": 1, "checkpoint_every": 1000, "log_every": 10, "workers": 0,
         "eval_pairs": 32, "pairs_per_grid": 8, "held_out_fraction": 0.25, "audit_images": 0, "diagnostic_steps": 0}


def _ctx(params: Path, *extra: str):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return [str(BIN / "ctx"), "pretrain", "--params", str(params), *extra], env


def test_a_second_ctx_pretrain_is_refused_naming_the_holder_and_runs_once_it_is_gone(tmp_path, synth_root):
    params = write_params(tmp_path, pretrain={**SMALL, "input": str(synth_root), "steps": 100000})
    cmd, env = _ctx(params)
    first = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lock = lock_path(tmp_path, "pretrain")
        deadline = time.monotonic() + 60
        while not (lock.is_file() and lock.read_text().strip() == str(first.pid)):
            assert first.poll() is None and time.monotonic() < deadline, "the first ctx pretrain never took the lock"
            time.sleep(0.2)
        cmd, env = _ctx(params, "--steps", "4")
        second = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ctx: error: stage pretrain is being written by another run "
                                                      f"(pid {first.pid}"), second.stderr
        assert not (tmp_path / "models/context/encoder.pt").exists()  # the refused run wrote nothing
        assert first.poll() is None  # and the first one goes on

        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
        assert again.returncode == 0, again.stderr[-2000:]
        assert (tmp_path / "models/context/encoder.pt").is_file()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


def test_a_dagster_materialisation_waits_then_fails_naming_the_ctx_run_that_holds_the_stage(tmp_path, synth_root,
                                                                                             monkeypatch):
    params = write_params(tmp_path, pretrain={**SMALL, "input": str(synth_root), "steps": 4})
    monkeypatch.setenv("CTX_PARAMS", str(params))
    monkeypatch.setenv("CTX_STAGE_LOCK_WAIT", "1")
    with stage_lock(tmp_path, "pretrain"):  # as `ctx pretrain` (or dvc repro) holds it
        started = time.monotonic()
        result = dg.materialize([pretrain], resources=dagster_resources(), raise_on_error=False)
        assert time.monotonic() - started < 30
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    message = failure.step_failure_data.user_failure_data.description
    assert message.startswith(f"stage pretrain is being written by another run (pid {os.getpid()}")
    assert "after waiting 1 s" in message
    assert not (tmp_path / "models/context/encoder.pt").exists()
