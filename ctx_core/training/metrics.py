"""Per-step metrics averaged over a window of recent steps and over the whole run,
after torchvision's ``references/detection/utils.py`` (``SmoothedValue``, ``MetricLogger``).

A step's metric is a mean over that step's items (pairs, images), so averages
weight each step by its item count: the mean over the window is the mean
over every item of the window's steps.
"""

from __future__ import annotations

from collections import deque
from typing import Mapping


class SmoothedValue:
    """One metric: the item-weighted mean of the last ``window`` steps and of all steps."""

    def __init__(self, window: int):
        if window < 1:
            raise ValueError(f"window = {window}: must be >= 1 step")
        self._recent: deque[tuple[float, float]] = deque(maxlen=window)  # (sum over the step's items, items)
        self.total = 0.0
        self.count = 0.0

    def update(self, value: float, n: float = 1.0) -> None:
        """Add a step whose mean over its ``n`` items is ``value``."""
        self._recent.append((value * n, n))
        self.total += value * n
        self.count += n

    def avg(self, last: int | None = None) -> float:
        """Mean over the last ``last`` steps (at most the window; default: the whole window)."""
        steps = len(self._recent) if last is None else last
        if not 1 <= steps <= len(self._recent):
            raise ValueError(f"avg(last={last}): between 1 and {len(self._recent)} steps are in the window")
        recent = list(self._recent)[-steps:]
        return sum(s for s, _ in recent) / sum(n for _, n in recent)

    @property
    def global_avg(self) -> float:
        """Mean over every step since this value was created."""
        return self.total / self.count

    @property
    def value(self) -> float:
        """The latest step's mean."""
        total, n = self._recent[-1]
        return total / n


class MetricLogger:
    """Named :class:`SmoothedValue` s updated together, once per step."""

    def __init__(self, window: int):
        self.window = window
        self.meters: dict[str, SmoothedValue] = {}

    def update(self, means: Mapping[str, float], n: float = 1.0) -> None:
        """Add a step: ``means`` over its ``n`` items, by metric name."""
        for name, value in means.items():
            self.meters.setdefault(name, SmoothedValue(self.window)).update(value, n)

    def avgs(self, last: int | None = None) -> dict[str, float]:
        """Each metric's mean over the last ``last`` steps (default: the whole window)."""
        return {name: meter.avg(last) for name, meter in self.meters.items()}

    def global_avgs(self) -> dict[str, float]:
        return {name: meter.global_avg for name, meter in self.meters.items()}
