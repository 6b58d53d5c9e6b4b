"""One writer per stage's outputs, whichever door runs it (``ctx``, ``dvc repro``, Dagster).

A stage run holds an exclusive ``flock`` on ``<project>/.ctx-locks/<stage>.lock``
(``<stage>`` as DVC names it, e.g. ``finetune@context``) for as long as it writes;
the file holds the owner's pid, so a second writer can say who it waits for.
The kernel drops the lock when the owner exits, however it dies (``kill -9``
included), so a lock never outlives its process and there is nothing to clean.
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from ctx_core.errors import UserError

LOCK_DIR = ".ctx-locks"
# How long a second writer waits before giving up; the CLI's default, overridable here.
WAIT_ENV = "CTX_STAGE_LOCK_WAIT"
POLL_SECONDS = 1.0


class StageBusy(UserError):
    """Another live process is writing the same stage's outputs."""


def lock_path(root: Path, stage: str) -> Path:
    return Path(root) / LOCK_DIR / f"{stage}.lock"


def wait_from_env(default: float) -> float:
    """Seconds to wait for a busy stage: ``$CTX_STAGE_LOCK_WAIT`` when set, else ``default``."""
    value = os.environ.get(WAIT_ENV)
    if value is None or value.strip() == "":
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise UserError(f"{WAIT_ENV}={value!r}: expected a number of seconds") from None
    if seconds < 0:
        raise UserError(f"{WAIT_ENV}={value!r}: expected a number of seconds >= 0")
    return seconds


def holder(path: Path) -> str:
    """The pid written in a lock file (``"unknown"`` when it cannot be read)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return "unknown"
    return text or "unknown"


@contextmanager
def stage_lock(root: Path, stage: str, wait: float = 0.0,
               on_wait: Callable[[str], None] | None = None) -> Iterator[Path]:
    """Hold the lock of ``stage`` in the project at ``root`` while the block runs.

    When another process holds it, ``on_wait`` gets a one-line message and this
    waits up to ``wait`` seconds (polling, so Ctrl-C stops it), then raises
    :class:`StageBusy` naming the stage and the holder's pid.
    """
    path = lock_path(root, stage)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # no truncation: the holder's pid stays readable
    except OSError as exc:
        raise UserError(f"cannot create the stage lock {path}: {exc.strerror}") from None
    try:
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pid = holder(path)
                if time.monotonic() >= deadline:
                    waited = f" after waiting {wait:.0f} s" if wait > 0 else ""
                    raise StageBusy(
                        f"stage {stage} is being written by another run (pid {pid}, lock {path}){waited}; "
                        f"wait for it to finish or stop it, then run again (or set {WAIT_ENV}=SECONDS to wait)"
                    ) from None
                if not told and on_wait is not None:
                    on_wait(f"stage {stage} is being written by another run (pid {pid}); "
                            f"waiting up to {wait:.0f} s for it to finish")
                told = True
                time.sleep(min(POLL_SECONDS, max(deadline - time.monotonic(), 0.01)))
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
