"""Keeping ``dvc.lock`` true when a stage ran outside ``dvc repro`` (from Dagster).

After an asset writes exactly what its DVC stage would have written (same
``ctx_core`` function, same params), ``dvc commit`` records the outputs'
hashes in ``dvc.lock``, so ``dvc status`` has nothing to redo. When the run
used settings that differ from ``params.yaml`` (a launchpad override), the
lock is left alone: it would otherwise claim the outputs came from params
they did not come from.

The other direction, ``dvc repro`` -> Dagster, reads ``dvc.lock``: a stage's
fingerprint is the hash of its outputs' hashes (:func:`lock_fingerprints`).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ctx_core.config import Settings, load_params
from ctx_core.errors import UserError

# Settings that change how fast a stage runs, not what it writes, and the
# sections DVC does not track as stage params.
_IGNORED = ("tracking", "storage")
_IGNORED_KEYS = ("device", "workers", "download_threads")


def is_dvc_project(root: Path) -> bool:
    return (root / "dvc.yaml").is_file() and (root / ".dvc").is_dir()


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): data}


def params_differences(settings: Settings) -> list[str]:
    """Keys whose effective value differs from the project's ``params.yaml``."""
    base = load_params(settings.root / "params.yaml").params.model_dump(mode="json")
    used = settings.params.model_dump(mode="json")
    a, b = _flatten(base), _flatten(used)
    return sorted(
        k for k in a.keys() | b.keys()
        if a.get(k) != b.get(k) and k.split(".")[0] not in _IGNORED and k.rsplit(".", 1)[-1] not in _IGNORED_KEYS
    )


def lock_fingerprints(root: Path) -> dict[str, str]:
    """``{stage: fingerprint}`` from ``dvc.lock`` (empty when there is none)."""
    lock = root / "dvc.lock"
    if not lock.is_file():
        return {}
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    out = {}
    for name, entry in stages.items():
        outs = sorted((o["path"], o.get("md5", "")) for o in entry.get("outs", []))
        out[name] = hashlib.sha256(json.dumps(outs).encode()).hexdigest()[:16]
    return out


@dataclass(frozen=True)
class DvcRecord:
    stage: str
    committed: bool
    reason: str                  # what happened, one line
    fingerprint: str | None      # the stage's outputs in dvc.lock after the commit


# What DVC says when another DVC process (``dvc repro``, ``dvc commit``) holds the repository
# lock or the stage's outputs; ``--quiet`` would hide it, so the commit runs without it.
_BUSY = ("unable to acquire lock", "is busy, it is being blocked by")
LOCK_WAIT_S = 120.0


def _busy(text: str) -> bool:
    low = text.lower()
    return any(marker in low for marker in _BUSY)


def commit_stage(settings: Settings, stage: str, lock_wait: float = LOCK_WAIT_S) -> DvcRecord:
    """``dvc commit`` one stage of the project holding ``settings``' params file, when the run matches it.

    While another DVC process holds the repository, the commit is retried for up to
    ``lock_wait`` seconds; then, or on any other failure, :class:`UserError` says that
    the outputs are written but ``dvc.lock`` does not record them.
    """
    root = settings.root
    if not is_dvc_project(root):
        return DvcRecord(stage, False, f"{root} is not a DVC project (no dvc.yaml and .dvc/)", None)
    if settings.source is not None and settings.source.resolve() != (root / "params.yaml").resolve():
        return DvcRecord(stage, False, f"params came from {settings.source.name}, DVC reads params.yaml", None)
    diffs = params_differences(settings)
    if diffs:
        shown = ", ".join(diffs[:5]) + (f" and {len(diffs) - 5} more" if len(diffs) > 5 else "")
        return DvcRecord(stage, False, f"dvc.lock left alone: this run's settings differ from params.yaml ({shown})", None)
    cmd = [sys.executable, "-m", "dvc", "commit", "--force", "--no-relink", stage]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    deadline = time.monotonic() + lock_wait
    while True:
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env)
        if proc.returncode == 0:
            return DvcRecord(stage, True, f"dvc commit {stage}: dvc.lock updated", lock_fingerprints(root).get(stage))
        text = f"{proc.stderr}\n{proc.stdout}".strip()
        if not _busy(text) or time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    why = next((line for line in lines if line.startswith("ERROR")), lines[-1] if lines else f"exit status {proc.returncode}")
    waited = f" (another DVC process held the repository for {lock_wait:.0f} s)" if _busy(text) else ""
    raise UserError(f"dvc commit {stage} failed in {root}{waited}: {why}; the outputs are written but dvc.lock "
                    f"does not record them: run `dvc commit {stage}` there once no other dvc command runs")
