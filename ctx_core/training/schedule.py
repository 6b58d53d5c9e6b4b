"""Learning-rate schedules as pure functions of the step: linear warm-up, then cosine or x0.1 steps.

The factor multiplies the optimizer's base lr (``torch.optim.lr_scheduler.LambdaLR``);
step ``s`` (0-based) trains with ``lr * lr_factor(s, schedule)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

DECAYS = ("cosine", "step")


@dataclass(frozen=True)
class Schedule:
    """Linear warm-up over ``warmup_steps``, then ``decay`` until ``steps``.

    ``warmup_from``: the factor at step 0, rising linearly towards 1 at step
    ``warmup_steps`` (torchvision's ``warmup_lr_scheduler``); ``None``: step
    ``s`` trains at ``(s + 1) / warmup_steps``, so the last warm-up step
    already has the full lr. ``decay``: ``"cosine"`` from 1 to 0 over the
    steps after the warm-up, or ``"step"``: x0.1 at each of ``milestones``
    (step numbers, see :func:`milestone_steps`).
    """

    steps: int
    warmup_steps: int = 0
    warmup_from: float | None = None
    decay: Literal["cosine", "step"] = "cosine"
    milestones: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.steps < 1 or self.warmup_steps < 0:
            raise ValueError(f"schedule: steps = {self.steps} must be >= 1 and warmup_steps = {self.warmup_steps} >= 0")
        if self.decay not in DECAYS:
            raise ValueError(f"schedule: decay {self.decay!r}: expected one of {', '.join(DECAYS)}")
        if self.warmup_from is not None and not 0 <= self.warmup_from <= 1:
            raise ValueError(f"schedule: warmup_from = {self.warmup_from} must be in [0, 1] (or None)")


def lr_factor(step: int, schedule: Schedule) -> float:
    """The lr multiplier of step ``step`` (0-based), in [0, 1]."""
    if step < schedule.warmup_steps:
        if schedule.warmup_from is None:
            return (step + 1) / schedule.warmup_steps
        return schedule.warmup_from + (1 - schedule.warmup_from) * step / schedule.warmup_steps
    if schedule.decay == "cosine":
        progress = (step - schedule.warmup_steps) / max(1, schedule.steps - schedule.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return 0.1 ** sum(step >= m for m in schedule.milestones)


def milestone_steps(fractions: Sequence[float], start: int, span: int) -> tuple[int, ...]:
    """For each fraction ``f``, the first step ``s`` with ``s - start >= f * span``.

    Pretraining drops at 2/3 and 8/9 of the steps after the warm-up
    (``start = warmup_steps``, ``span = steps - warmup_steps``); detection at
    ``lr_decay_at`` of all steps (``start = 0``, ``span = steps``), as
    torchvision's ``MultiStepLR`` milestones.
    """
    return tuple(start + math.ceil(f * span) for f in fractions)
