"""Confidence intervals for the numbers the pipeline reports.

Two sources of noise, two intervals:

- **over seeds** (detection): the same init trained with different seeds gives
  different mAPs. :func:`t_interval` is the Student-t interval of the mean of
  ``n`` values, ``mean +- t_{n-1, 0.975} * s / sqrt(n)``; :func:`paired_difference`
  is the same interval for the per-seed differences of two inits that share
  their seeds (a paired t-interval), which removes what a seed does to both.
- **over test images** (probes): one trained probe, scored on a test set that
  could have been another sample of images. :func:`bootstrap` resamples the
  test images with replacement ``resamples`` times and takes the 2.5 and 97.5
  percentiles of the statistic (the percentile bootstrap); a statistic of
  several featurisers computed on the *same* resample gives paired intervals
  of their differences.

An interval from one value (n = 1) has no width: its bounds are NaN and it
supports no ranking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """``mean`` with a ``level`` confidence interval [``low``, ``high``] from ``n`` values
    (bounds NaN when ``n`` < 2 or the interval is undefined)."""

    mean: float
    low: float
    high: float
    n: int
    level: float = LEVEL

    @property
    def defined(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0 (a difference beyond noise)."""
        return self.defined and (self.low > 0 or self.high < 0)

    def overlaps(self, other: "Interval") -> bool:
        if not (self.defined and other.defined):
            return True
        return not (self.low > other.high or other.low > self.high)

    def format(self, scale: float = 1.0, digits: int = 1, signed: bool = False, unit: str = "") -> str:
        """``12.3 [10.1, 14.5]`` (``+1.2 [-0.3, +2.7]`` when ``signed``), then ``unit``, then ``n=...``."""
        sign = "+" if signed else ""

        def f(x: float) -> str:
            return f"{scale * x:{sign}.{digits}f}" if math.isfinite(x) else "n/a"

        body = f"{f(self.mean)} [{f(self.low)}, {f(self.high)}]" if self.defined else f"{f(self.mean)} [no interval]"
        return f"{body}{' ' + unit if unit else ''}, n={self.n}"

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}mean": self.mean, f"{prefix}low": self.low, f"{prefix}high": self.high, f"{prefix}n": self.n}


def json_finite(x: Any) -> Any:
    """``x`` (dicts, lists, numbers) with every non-finite float replaced by None: JSON has no
    NaN, and ``dvc metrics show`` reads these files."""
    if isinstance(x, dict):
        return {k: json_finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_finite(v) for v in x]
    return None if isinstance(x, float) and not math.isfinite(x) else x


def t_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Student-t interval of the mean of ``values`` (NaN values are dropped)."""
    from scipy import stats

    x = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    n = len(x)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0, level)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, float("nan"), float("nan"), n, level)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return Interval(mean, mean - half, mean + half, n, level)


def paired_difference(a: Mapping[object, float], b: Mapping[object, float], level: float = LEVEL) -> Interval:
    """``a - b`` over the keys (seeds) both have a finite value for: the paired t-interval."""
    keys = sorted(k for k in set(a) & set(b) if math.isfinite(a[k]) and math.isfinite(b[k]))
    return t_interval([a[k] - b[k] for k in keys], level)


def bootstrap_indices(n_items: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n_items) int indices drawn with replacement, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_items, size=(resamples, n_items))


def bootstrap(statistic: Callable[[np.ndarray], float], n_items: int, resamples: int = 1000, seed: int = 0,
              level: float = LEVEL, indices: np.ndarray | None = None) -> Interval:
    """Percentile-bootstrap interval of ``statistic(idx)`` over items (test images).

    ``statistic`` takes an index array into the items (with repeats) and returns a
    float; its value on ``arange(n_items)`` is the point estimate. Resamples where
    the statistic is undefined (NaN) are dropped. Pass the same ``indices``
    (:func:`bootstrap_indices`) to several calls to pair their intervals."""
    point = float(statistic(np.arange(n_items)))
    if n_items < 2 or resamples < 1:
        return Interval(point, float("nan"), float("nan"), n_items, level)
    idx = bootstrap_indices(n_items, resamples, seed) if indices is None else indices
    values = np.array([statistic(row) for row in idx], dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) < max(10, resamples // 2):
        return Interval(point, float("nan"), float("nan"), n_items, level)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return Interval(point, float(low), float(high), n_items, level)
