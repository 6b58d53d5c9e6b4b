"""The quality gates, against a plain computation of the binomial margin."""

import math

import numpy as np

from ctx_core.checks import CHANCE, chance_accuracy, chance_threshold, detector_problem, encoder_problem
from ctx_core.pretext.grid import NEIGHBOUR_PAIRS


def test_chance_threshold_is_two_standard_errors_above_one_eighth():
    for pairs in (1, 64, 2048):
        se = math.sqrt(0.125 * 0.875 / pairs)
        assert chance_threshold(pairs) == CHANCE + 2 * se
    assert chance_threshold(0) == chance_threshold(1)


def test_encoder_gate():
    assert encoder_problem(0.39, 2048) is None
    assert "not above chance" in encoder_problem(0.13, 2048)
    assert "not above chance" in encoder_problem(0.20, 16)   # 0.2 over 16 pairs is luck
    assert "no finite" in encoder_problem(float("nan"), 2048)
    assert "no finite" in encoder_problem(None, 2048)


def test_chance_is_the_most_frequent_labels_share():
    # all 40 ordered pairs of a grid: 6 per axis direction (3 rows x 2), 4 per diagonal (2 x 2 blocks)
    counts = np.bincount(NEIGHBOUR_PAIRS[:, 2], minlength=8)
    assert counts.tolist() == [4, 6, 4, 6, 6, 4, 6, 4]
    # a net answering "R" whatever the patches: right on every R pair, wrong elsewhere
    labels = np.tile(NEIGHBOUR_PAIRS[:, 2], 205)
    confusion = np.zeros((8, 8), np.int64)
    np.add.at(confusion, (labels, np.full_like(labels, 4)), 1)
    accuracy = np.trace(confusion) / confusion.sum()
    assert accuracy == 6 / 40 == chance_accuracy(confusion)
    # it clears 1/8 + 2 SE, so the gate measures chance as that share, not as 1/8
    assert accuracy > chance_threshold(len(labels))
    assert "not above chance (0.150" in encoder_problem(accuracy, len(labels), chance_accuracy(confusion))
    assert encoder_problem(0.30, len(labels), chance_accuracy(confusion)) is None
    balanced = np.full((8, 8), 3)
    assert chance_accuracy(balanced) == CHANCE and chance_accuracy(np.zeros((8, 8))) == CHANCE
    # the task's own chance: a jigsaw of 100 orders guesses 1 %, so 13 % is above it; unknown -> 1/8
    assert encoder_problem(0.13, 2048, 0.01) is None and encoder_problem(0.13, 2048, 0.10) is None
    assert "not above chance (0.125" in encoder_problem(0.13, 2048) == encoder_problem(0.13, 2048, float("nan"))


def test_detector_gate():
    assert detector_problem(0.0) is None and detector_problem(0.258) is None
    for bad in (float("nan"), float("inf"), None):
        assert "not a finite number" in detector_problem(bad)
    assert "outside [0, 1]" in detector_problem(1.5)
