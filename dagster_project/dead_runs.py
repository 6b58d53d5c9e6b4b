"""Runs whose process died (``kill -9``, OOM, power loss) give back what they held.

Dagster marks a run finished from inside its own process; a run killed outright
stays ``STARTED`` in the instance and keeps its slot in the ``gpu`` pool, so every
later training step waits for it forever (the wait spins a core and ignores
Ctrl-C). :func:`release_dead_runs` finds in-flight runs none of whose processes
(the run worker of ``RUN_START``, the step processes of ``STEP_START``) is alive,
marks them failed and frees their concurrency slots, and frees the slots of runs
that ended or were deleted without doing so.

Only for a local instance (SQLite under ``DAGSTER_HOME``): there every run's
processes are on this machine, so a pid that is gone means a dead run. A
deployment with a shared database and remote run workers (Kubernetes) relies on
Dagster's run monitoring instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import dagster as dg
from dagster._core.events import DagsterEventType
from dagster._core.storage.runs import SqliteRunStorage

IN_FLIGHT = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
# A process that started this long after the event naming its pid is another process with a recycled pid.
PID_REUSE_SLACK_S = 2.0


@dataclass(frozen=True)
class DeadRun:
    run_id: str
    pids: tuple[int, ...]


def _started_at(pid: int) -> Optional[float]:
    """When process ``pid`` started (Unix time), from /proc; None where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, IndexError, StopIteration, ValueError):
        return None
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat: start time in clock ticks


def process_alive(pid: int, since: float) -> bool:
    """Whether ``pid`` is a live process that was already running at time ``since``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    started = _started_at(pid)
    if started is None:
        return os.path.exists(f"/proc/{pid}") or not os.path.isdir("/proc")
    return started <= since + PID_REUSE_SLACK_S


def is_local(instance: dg.DagsterInstance) -> bool:
    return isinstance(instance.run_storage, SqliteRunStorage)


def dead_runs(instance: dg.DagsterInstance) -> list[DeadRun]:
    """In-flight runs of a local instance that have started and none of whose processes is alive."""
    if not is_local(instance):
        return []
    found = []
    for run in instance.get_runs(dg.RunsFilter(statuses=IN_FLIGHT)):
        records = instance.get_records_for_run(
            run.run_id, of_type={DagsterEventType.RUN_START, DagsterEventType.STEP_START}).records
        processes = {(r.event_log_entry.dagster_event.pid, r.event_log_entry.timestamp) for r in records
                     if r.event_log_entry.dagster_event is not None and r.event_log_entry.dagster_event.pid}
        if not processes:
            continue  # launched, worker not started yet: Dagster's own start timeout covers it
        if not any(process_alive(pid, ts) for pid, ts in processes):
            found.append(DeadRun(run.run_id, tuple(sorted({pid for pid, _ in processes}))))
    return found


def release_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark dead runs failed and free every slot a finished, deleted or dead run holds; one line per fix."""
    notes = []
    for dead in dead_runs(instance):
        run = instance.get_run_by_id(dead.run_id)
        if run is None or run.status not in IN_FLIGHT:
            continue
        pids = ", ".join(map(str, dead.pids))
        instance.report_run_failed(run, message=f"The run's process (pid {pids}) is gone (killed?); "
                                                "marked failed and its concurrency slots freed.")
        notes.append(f"run {dead.run_id} was {run.status.value} but its process (pid {pids}) is gone: marked failed")
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return notes
    for run_id in sorted(storage.get_concurrency_run_ids()):
        run = instance.get_run_by_id(run_id)
        if run is None or run.status in FINISHED:
            storage.free_concurrency_slots_for_run(run_id)
            state = "deleted" if run is None else run.status.value
            notes.append(f"freed the concurrency slots of run {run_id} ({state})")
    return notes


def pool_holders(instance: dg.DagsterInstance, pool: str) -> list[str]:
    """Run ids holding a slot of ``pool`` now."""
    if not instance.event_log_storage.supports_global_concurrency_limits:
        return []
    info = instance.event_log_storage.get_concurrency_info(pool)
    return sorted({slot.run_id for slot in info.claimed_slots})
