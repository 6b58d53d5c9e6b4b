"""Training checkpoints on disk: ``step-<n>.pt`` files, written atomically, newest kept."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ctx_core.errors import UserError

KEEP_CHECKPOINTS = 2


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable or from another configuration."""


def checkpoint_path(folder: Path, step: int) -> Path:
    return folder / f"step-{step:07d}.pt"


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints in ``folder``, oldest first."""
    return sorted(folder.glob("step-*.pt")) if folder.is_dir() else []


def write_checkpoint(folder: Path, step: int, state: dict[str, Any], keep: int = KEEP_CHECKPOINTS) -> Path:
    """Write ``state`` (tensors and primitives only, so ``weights_only=True`` reads it) as
    step ``step``; a kill mid-write leaves the previous checkpoint intact. Keeps the newest ``keep``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(folder, step)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink()
    return path


def read_checkpoint(folder: Path, config: dict[str, Any], resumable: set[str], steps: int, section: str) -> dict[str, Any]:
    """The newest checkpoint in ``folder``, for ``--resume``.

    Refuses (naming the keys) one written with other settings than ``config``,
    except the keys in ``resumable``; a corrupt newest file is reported and the
    older one kept; a checkpoint already at ``steps`` is refused. ``section``
    names the params section in messages.
    """
    found = list_checkpoints(folder)
    if not found:
        raise CheckpointError(f"--resume: no checkpoint (step-*.pt) in {folder}; run without --resume to start fresh")
    path = found[-1]
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        step = int(state["step"])
    except Exception as exc:  # torch raises several types for damaged files
        older = f"; the older {found[-2].name} is kept: delete {path.name} to resume from it" if len(found) > 1 else ""
        raise CheckpointError(f"--resume: checkpoint {path} is corrupt ({type(exc).__name__}){older}") from None
    saved = state["config"]
    differing = sorted(k for k in set(saved) | set(config) if k not in resumable and saved.get(k) != config.get(k))
    if differing:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {config.get(k)!r}" for k in differing)
        raise CheckpointError(f"--resume: checkpoint {path.name} was trained with other settings ({detail}); "
                              f"restore them or start without --resume")
    if step >= steps:
        raise CheckpointError(f"--resume: checkpoint {path.name} is at step {step}, already >= {section}.steps = {steps}")
    return state
