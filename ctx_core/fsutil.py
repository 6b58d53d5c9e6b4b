"""Filesystem helpers: all-or-nothing output folders and DVC-compatible hashes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ctx_core.errors import UserError


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


@contextmanager
def atomic_output_dir(out: Path, force: bool) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it replaces ``out``.

    On any error the temporary folder is removed and ``out`` is left as it was,
    so no half-written dataset is ever visible under ``out``.
    """
    check_output_dir(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as exc:
        raise OutputError(f"cannot write to {out.parent}: {exc.strerror}") from None
    try:
        yield tmp
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent)) / "old"
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
