"""``make pipeline``: the whole pipeline through Dagster, redoing only what DVC says is stale.

1. ``dvc status`` names the stages whose deps, params or outputs changed (on a
   fresh clone: all of them); their assets and everything downstream are
   materialised in one Dagster run (``dagster asset materialize``, in process,
   in the instance under ``DAGSTER_HOME``, which ``make ui`` shows). Each asset
   records its stage in ``dvc.lock``. Runs of the instance whose process died
   (``kill -9``) are marked failed and give back their ``gpu`` slot first, and
   again while this run waits (``dagster_project.dead_runs``); Ctrl-C or SIGTERM
   stops the run within ``STOP_GRACE_S`` seconds and leaves nothing held.
2. Stages that ``dvc repro`` ran outside Dagster are reported to the instance
   from ``dvc.lock`` (the same thing ``dvc_lock_sensor`` does under ``dagster dev``).
3. The registry comparison, ``dvc status`` and ``dvc metrics show`` are printed.

Usage: ``python -m dagster_project.pipeline [--all]`` (``--all``: every asset).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

BIN = Path(sys.executable).parent
IN_PROCESS = json.dumps({"execution": {"config": {"in_process": {}}}})
# While the run goes on, look for dead runs holding a slot this often; after Ctrl-C/SIGTERM
# give the run this long to stop itself (a step waiting for a slot ignores both), then kill it.
WATCH_S = 5.0
STOP_GRACE_S = 30.0


INSTANCE_YAML = """\
# Dagster instance of `make pipeline` and `make ui` (SQLite under this folder).
telemetry:
  enabled: false
concurrency:
  pools:
    default_limit: 1   # the `gpu` pool (training assets): one step at a time
"""


def _env() -> dict[str, str]:
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONWARNINGS": "ignore:::click.core"}  # `dagster asset materialize` is "superseded" by dg launch


def _run(cmd: list[str], root: Path, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=root, env=_env(), text=True, capture_output=capture)
    if check and proc.returncode != 0:
        sys.exit(f"pipeline: {' '.join(cmd[:4])} ... failed (exit {proc.returncode})"
                 + (f": {proc.stderr.strip().splitlines()[-1]}" if capture and proc.stderr.strip() else ""))
    return proc


def stale_stages(root: Path) -> list[str]:
    out = _run([str(BIN / "dvc"), "status", "--json"], root, capture=True).stdout
    return sorted(json.loads(out or "{}"))


def selection(stages: list[str]) -> str:
    """Dagster selection: each stale stage's asset and everything downstream of it."""
    from dagster_project.stage import asset_for_stage

    keys = sorted({key.to_user_string() for key in map(asset_for_stage, stages) if key is not None})
    return ",".join(f"{k}*" for k in keys)


class Terminated(Exception):
    """SIGTERM, raised where the main thread is, so the run is stopped as on Ctrl-C."""


def _terminate(signum, frame) -> None:
    raise Terminated()


def recover(instance) -> None:
    """Dead runs of the instance: marked failed, their concurrency slots freed; said on stdout."""
    from dagster_project.dead_runs import release_dead_runs

    for note in release_dead_runs(instance):
        print(f"pipeline: {note}", flush=True)


def stop(proc: subprocess.Popen, forward: Optional[int]) -> None:
    """Stop the materialisation: ``forward`` the signal (Ctrl-C reached it already), wait, then kill."""
    if forward is not None and proc.poll() is None:
        proc.send_signal(forward)
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        print(f"pipeline: the Dagster run did not stop within {STOP_GRACE_S:.0f} s; killing it", flush=True)
        proc.kill()
        proc.wait()


def materialize(select: str, root: Path) -> int:
    """``dagster asset materialize`` of ``select`` in process; the exit status (130 when stopped)."""
    import dagster as dg

    from dagster_project.dead_runs import pool_holders

    instance = dg.DagsterInstance.get()
    recover(instance)
    holders = pool_holders(instance, "gpu")
    if holders:
        print(f"pipeline: run(s) {', '.join(holders)} hold the gpu pool; training steps wait for them "
              "(Ctrl-C stops this run)", flush=True)
    cmd = [str(BIN / "dagster"), "asset", "materialize", "-m", "dagster_project.definitions",
           "--select", select, "--config-json", IN_PROCESS]
    previous = signal.signal(signal.SIGTERM, _terminate)
    proc = subprocess.Popen(cmd, cwd=root, env=_env())
    try:
        while True:
            try:
                return proc.wait(timeout=WATCH_S)
            except subprocess.TimeoutExpired:
                recover(instance)  # a run that died while this one waits for its slot
    except (KeyboardInterrupt, Terminated) as exc:
        print("pipeline: interrupted; stopping the Dagster run", flush=True)
        stop(proc, signal.SIGTERM if isinstance(exc, Terminated) else None)
        recover(instance)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def report_dvc_runs() -> int:
    """Report dvc.lock entries the Dagster instance has not seen; returns how many."""
    import dagster as dg

    from dagster_project.defs.dvc_lock import lock_events

    instance = dg.DagsterInstance.get()
    events = lock_events(instance)
    for event in events:
        instance.report_runless_asset_event(event)
    return len(events)


HEADLINES = {
    "held_out_accuracy": "pretext accuracy (held out; chance_accuracy in the file)",
    "mAP": "detection mAP",
    "learned.max_coverage_test": "discovery: max coverage on test (learned features)",
    "learned.purity_coverage_area_test": "discovery: purity-coverage area on test (learned)",
    "random_init.purity_coverage_area_test": "discovery: purity-coverage area on test (random init)",
}


def headline(root: Path) -> list[str]:
    """The few numbers a reader looks for, from ``dvc metrics show --json``."""
    out = _run([str(BIN / "dvc"), "metrics", "show", "--json"], root, check=False, capture=True).stdout
    try:
        files = next(iter(json.loads(out).values()))["data"]
    except (ValueError, StopIteration, KeyError, TypeError):
        return ["(no metrics yet)"]
    lines = []
    for path, entry in sorted(files.items()):
        data = entry.get("data", {})
        flat = dict(data)  # one level of nesting, as in discovery's {"learned": {...}}
        for k, v in data.items():
            if isinstance(v, dict):
                flat.update({f"{k}.{k2}": v2 for k2, v2 in v.items()})
        for key, label in HEADLINES.items():
            if isinstance(flat.get(key), (int, float)):
                who = f" [{data['init']}]" if "init" in data else ""
                lines.append(f"{label}{who}: {flat[key]:.3f}   ({path})")
    return lines


def main(argv: list[str] | None = None) -> int:
    from dagster_project.settings import params_file

    parser = argparse.ArgumentParser(prog="python -m dagster_project.pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="materialise every asset, stale or not")
    args = parser.parse_args(argv)
    root = params_file().parent
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(root / ".dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").write_text(INSTANCE_YAML)

    start = time.monotonic()
    stale = ["*"] if args.all else stale_stages(root)
    if stale:
        select = "*" if args.all else selection(stale)
        print(f"pipeline: stale stages: {', '.join(stale)} -> materialising {select}", flush=True)
        code = materialize(select, root)
        if code == 130:
            return 130
        if code != 0:
            sys.exit(f"pipeline: dagster asset materialize --select {select} failed (exit {code})")
    else:
        print("pipeline: DVC says every stage is up to date; nothing to materialise", flush=True)
    reported = report_dvc_runs()
    if reported:
        print(f"pipeline: reported {reported} stage(s) made by `dvc repro` to Dagster", flush=True)
    minutes = (time.monotonic() - start) / 60

    from ctx_core.config import load_params

    comparison = load_params(params_file()).path(load_params(params_file()).params.compare.reports) / "comparison.md"
    if comparison.is_file():
        print("\n" + comparison.read_text())
    print("$ dvc status", flush=True)
    _run([str(BIN / "dvc"), "status"], root)
    print("\nheadline metrics (all of them: dvc metrics show)")
    for line in headline(root):
        print(f"  {line}")
    print(f"\npipeline: done in {minutes:.1f} min; see it with `make ui` (Dagster) and `make mlflow-ui` (MLflow)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
