"""The quality gates a model must pass before a registry alias may point at it.

Shared by the Dagster asset checks (which block downstream assets) and by
``ctx compare`` (which only moves an alias to a version that passes), so both
front doors apply the same rules.
"""

from __future__ import annotations

import math

CHANCE = 1 / 8  # eight relative positions


def chance_threshold(pairs: int) -> float:
    """Pretext accuracy an encoder must beat: chance plus two binomial standard
    errors over ``pairs`` held-out pairs, so a lucky untrained net does not pass."""
    return CHANCE + 2 * math.sqrt(CHANCE * (1 - CHANCE) / max(int(pairs), 1))


def encoder_problem(accuracy: float | None, pairs: int) -> str | None:
    """Why an encoder fails its gate, or None when it passes."""
    if accuracy is None or not math.isfinite(accuracy):
        return "no finite held-out pretext accuracy"
    threshold = chance_threshold(pairs)
    if accuracy <= threshold:
        return f"pretext accuracy {accuracy:.3f} is not above chance ({threshold:.3f} over {pairs} pairs)"
    return None


def detector_problem(mean_ap: float | None) -> str | None:
    """Why a detector fails its gate (a non-finite or missing mAP), or None."""
    if mean_ap is None or not math.isfinite(mean_ap):
        return f"mAP is {mean_ap!r}, not a finite number"
    if not 0.0 <= mean_ap <= 1.0:
        return f"mAP {mean_ap!r} is outside [0, 1]"
    return None
