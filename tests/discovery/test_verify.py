import numpy as np

from ctx_core.discovery.verify import fit_scale_translation, verify

SQUARE = np.array([[16.0, 16.0], [48.0, 16.0], [16.0, 48.0], [48.0, 48.0]])  # centres of 4 adjacent 32-px patches
SIZES = np.full(4, 32.0)


def check(m_centres, m_sizes, max_residual=0.2, max_scale_ratio=1.5):
    return bool(verify(SQUARE, SIZES, np.asarray(m_centres, float), np.asarray(m_sizes, float), max_residual, max_scale_ratio))


def test_fit_recovers_scale_and_translation():
    s, t, rms = fit_scale_translation(SQUARE, 2 * SQUARE + [100, 7])
    assert np.isclose(s, 2) and np.allclose(t, [100, 7]) and np.isclose(rms, 0)


def test_a_scaled_shifted_square_with_matching_patch_sizes_passes():
    assert check(2 * SQUARE + [30, 40], 2 * SIZES)
    assert check(0.5 * SQUARE + [3, 5], 0.5 * SIZES)


def test_small_jitter_passes_large_distortion_fails():
    jitter = np.array([[2, -1], [-1, 2], [1, 1], [-2, 0]])
    assert check(SQUARE + jitter, SIZES)  # rms ~2 px on a 32-px side
    stretched = SQUARE * [2.0, 1.0]  # a 64x32 rectangle: residual 0.24 of the fitted side
    assert not check(stretched, SIZES)


def test_shuffled_corners_fail():
    assert not check(SQUARE[[3, 1, 2, 0]], SIZES)  # diagonal swap: the fit collapses
    assert not check(SQUARE[[1, 0, 3, 2]], SIZES)  # mirrored left-right


def test_collapsed_matches_fail():
    assert not check(np.repeat(SQUARE[:1], 4, axis=0), SIZES)  # all four on one spot: scale 0


def test_patch_size_inconsistent_with_the_fitted_square_fails():
    assert not check(2 * SQUARE, SIZES)  # square twice as big, patches the same size
    assert check(2 * SQUARE, SIZES, max_scale_ratio=2.0)


def test_thresholds_are_settable():
    jitter = np.array([[6, -5], [-5, 6], [5, 5], [-6, 0]])
    assert not check(SQUARE + jitter, SIZES)
    assert check(SQUARE + jitter, SIZES, max_residual=0.5)


def test_vectorised_over_candidates():
    cands = np.stack([2 * SQUARE, SQUARE[[3, 1, 2, 0]], SQUARE + 5])
    ok = verify(SQUARE, SIZES, cands, np.stack([2 * SIZES, SIZES, SIZES]), 0.2, 1.5)
    assert ok.tolist() == [True, False, True]
