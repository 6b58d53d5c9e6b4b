"""What a training checkpoint holds and how a run picks up from one.

A checkpoint is ``{step, model, optimizer, scheduler, rng, config, history, run_id}``:
tensors, numbers, strings and the JSON-able ``config`` only, so
``torch.load(weights_only=True)`` reads it. ``step`` is the number of steps
done; ``config`` is what a resumption must match (see
:func:`ctx_core.checkpoints.read_checkpoint`); ``history`` the logged metric
rows up to ``step``, so a resumed run's curves start at step 0 whatever
happened to the tracking server; ``run_id`` the tracking run that wrote it,
so the run resuming it can link to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ctx_core.checkpoints import list_checkpoints, write_checkpoint

Scheduler = torch.optim.lr_scheduler.LRScheduler


def rng_state() -> dict[str, Any]:
    """The torch and NumPy global RNG states."""
    _, keys, pos, *_ = np.random.get_state()
    # tensors and ints only, so torch.load(weights_only=True) can read it back
    return {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
            "numpy_pos": int(pos)}


def set_rng_state(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    np.random.set_state(("MT19937", rng["numpy_keys"].numpy().astype(np.uint32), rng["numpy_pos"]))


def save(folder: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Scheduler,
         config: dict[str, Any], history: Sequence[dict[str, float]] = (), run_id: str | None = None) -> Path:
    """Checkpoint ``step-<step>.pt`` in ``folder`` (atomic; the newest two are kept)."""
    return write_checkpoint(folder, step, {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        "config": config,
        "history": [dict(row) for row in history],
        "run_id": run_id or "",
    })


def restore(state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Scheduler) -> int:
    """Load a checkpoint (as :func:`ctx_core.checkpoints.read_checkpoint` returns it) into the run.

    Returns the step to continue from.
    """
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if "rng" in state:  # detection checkpoints written before the shared loop have none (it reseeds every image)
        set_rng_state(state["rng"])
    return int(state["step"])


def saved_history(state: dict[str, Any]) -> list[dict[str, float]]:
    """The metric rows a checkpoint kept, up to its step (none in checkpoints written before they kept them)."""
    return [dict(row) for row in state.get("history", []) if row["step"] <= int(state["step"])]


def saved_run_id(state: dict[str, Any]) -> str | None:
    """The tracking run that wrote a checkpoint, if it recorded one."""
    return state.get("run_id") or None


def clear(folder: Path) -> None:
    """Delete ``folder``'s checkpoints: a fresh run must not leave an older run's to be resumed later."""
    for old in list_checkpoints(folder):
        old.unlink()
