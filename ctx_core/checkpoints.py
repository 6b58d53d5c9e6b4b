"""Training checkpoints on disk: ``step-<n>.pt`` files, written atomically, newest kept."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

KEEP_CHECKPOINTS = 2


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
