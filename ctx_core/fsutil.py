"""Filesystem helpers: all-or-nothing output folders and DVC-compatible hashes."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ctx_core.errors import UserError

log = logging.getLogger(__name__)


class OutputError(UserError):
    """An output location the stage cannot use; the message is one line."""


def check_output_dir(out: Path, force: bool) -> None:
    """Fail early, naming ``out``, when it cannot receive a fresh dataset."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputError(f"output folder {out} is not empty; pass --force to replace it")
    parent = out.parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"cannot create {out}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write to {probe} (needed for {out})")


def _hold(folder: Path) -> int:
    """An open descriptor of ``folder`` with an exclusive ``flock`` on it: its writer is alive.
    The kernel drops the lock when the writer exits, however it dies."""
    fd = os.open(folder, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _writer_alive(folder: Path) -> bool:
    """Whether the pid in a ``.<name>.partial-<pid>-*`` name is a live process (False without one)."""
    pid = folder.name.rsplit(".", 1)[-1].split("-")[1:2]
    if not pid or not pid[0].isdigit():
        return False  # named before folders carried their writer's pid
    try:
        os.kill(int(pid[0]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(out: Path) -> list[Path]:
    """Remove the ``.<name>.partial-*`` / ``.<name>.old-*`` folders beside ``out`` left by a
    writer that died (``kill -9``, power loss); a live writer's folder is locked and kept.
    An ``old`` copy whose writer died between its two renames is put back as ``out``."""
    removed = []
    for folder in sorted(out.parent.glob(f".{out.name}.partial-*")) + sorted(out.parent.glob(f".{out.name}.old-*")):
        try:
            fd = os.open(folder, os.O_RDONLY)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its writer is still running
            if _writer_alive(folder):
                continue  # just created, not locked yet
            if folder.name.startswith(f".{out.name}.old-") and (folder / "old").is_dir() and not out.exists():
                (folder / "old").rename(out)
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        finally:
            os.close(fd)
    if removed:
        log.info("removed %d folder(s) of a killed earlier run beside %s: %s", len(removed), out,
                 ", ".join(f.name for f in removed))
    return removed


@contextmanager
def atomic_output_dir(out: Path, force: bool) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it replaces ``out``.

    On any error the temporary folder is removed and ``out`` is left as it was,
    so no half-written dataset is ever visible under ``out``. The folder is
    named ``.<name>.partial-<pid>-*`` and locked while its writer lives, so a
    killed writer's folder is removed by the next run (:func:`remove_stale_partials`).
    """
    check_output_dir(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    except OSError as exc:
        raise OutputError(f"cannot write to {out.parent}: {exc.strerror}") from None
    held = [_hold(tmp)]
    try:
        yield tmp
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}-", dir=out.parent)) / "old"
            held.append(_hold(old.parent))
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        for fd in held:
            os.close(fd)


def file_digest(path: Path, algorithm: str = "md5") -> str:
    """Hex digest of a file's bytes, read in chunks (``hashlib.file_digest``)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def dvc_dir_hash(root: Path) -> str:
    """The hash DVC 3 records for a directory output (``<md5>.dir``).

    DVC hashes the JSON list of ``{"md5", "relpath"}`` entries sorted by path;
    computing it here lets a stage tag its MLflow run with the same data
    version that ``dvc.lock`` will hold, whichever front door ran it.
    """
    entries = [
        {"md5": file_digest(p), "relpath": p.relative_to(root).as_posix()}
        for p in root.rglob("*")
        if p.is_file()
    ]
    entries.sort(key=lambda e: e["relpath"])
    blob = json.dumps(entries, sort_keys=True).encode("utf-8")
    return hashlib.md5(blob).hexdigest() + ".dir"
