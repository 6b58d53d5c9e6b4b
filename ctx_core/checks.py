"""The quality gates a model must pass before a registry alias may point at it.

Shared by the Dagster asset checks (which block downstream assets) and by
``ctx compare`` (which only moves an alias to a version that passes), so both
front doors apply the same rules.
"""

from __future__ import annotations

import math

import numpy as np

CHANCE = 1 / 8  # eight relative positions, equally frequent (pairs: random_neighbour)


def chance_accuracy(confusion: np.ndarray) -> float:
    """The accuracy of always answering the most frequent true label of the
    evaluated pairs (rows of ``confusion``): what a net that ignores the patches
    can reach. 1/8 when the labels are balanced; with all 40 ordered pairs of
    a grid, 6 pairs per axis direction and 4 per diagonal, it is 6/40 = 0.15."""
    total = confusion.sum()
    return float(confusion.sum(axis=1).max() / total) if total else CHANCE


def chance_threshold(pairs: int, chance: float = CHANCE) -> float:
    """Pretext accuracy an encoder must beat: chance plus two binomial standard
    errors over ``pairs`` held-out pairs, so a lucky untrained net does not pass."""
    return chance + 2 * math.sqrt(chance * (1 - chance) / max(int(pairs), 1))


def encoder_problem(accuracy: float | None, pairs: int, chance: float | None = None) -> str | None:
    """Why an encoder fails its gate, or None when it passes. ``chance``: what guessing scores on the
    task's held-out items (metrics.json's ``chance_accuracy``; 1/8, context's balanced labels, when
    not known; 1/4 for rotation, 1/permutations for jigsaw, 1/(2N-1) for instance retrieval)."""
    if accuracy is None or not math.isfinite(accuracy):
        return "no finite held-out pretext accuracy"
    chance = CHANCE if chance is None or not math.isfinite(chance) or chance <= 0 else chance
    threshold = chance_threshold(pairs, chance)
    if accuracy <= threshold:
        return (f"pretext accuracy {accuracy:.3f} is not above chance ({chance:.3f} + 2 SE = {threshold:.3f} "
                f"over {pairs} pairs)")
    return None


def detector_problem(mean_ap: float | None) -> str | None:
    """Why a detector fails its gate (a non-finite or missing mAP), or None."""
    if mean_ap is None or not math.isfinite(mean_ap):
        return f"mAP is {mean_ap!r}, not a finite number"
    if not 0.0 <= mean_ap <= 1.0:
        return f"mAP {mean_ap!r} is outside [0, 1]"
    return None
