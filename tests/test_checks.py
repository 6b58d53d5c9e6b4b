"""The quality gates, against a plain computation of the binomial margin."""

import math

from ctx_core.checks import CHANCE, chance_threshold, detector_problem, encoder_problem


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


def test_detector_gate():
    assert detector_problem(0.0) is None and detector_problem(0.258) is None
    for bad in (float("nan"), float("inf"), None):
        assert "not a finite number" in detector_problem(bad)
    assert "outside [0, 1]" in detector_problem(1.5)
