"""Geometric verification: do four matched patches form the query's square?

The query constellation's four centres ``q`` (4, 2) and a candidate's matched
centres ``m`` (4, 2) are related by a least-squares scale + translation
``m ~ s * q + t``:

    s = sum(qc . mc) / sum(|qc|^2),  t = mean(m) - s * mean(q)

with ``qc``, ``mc`` the centred point sets. A candidate passes when

- ``s > 0`` (not collapsed or mirrored through a point),
- the RMS residual, divided by the fitted square's side ``s * side(q)``, is
  at most ``max_residual``, and
- every matched patch's side over the fitted query patch side ``s * size(q)``
  lies within [1 / max_scale_ratio, max_scale_ratio].
"""

from __future__ import annotations

import numpy as np


def fit_scale_translation(q: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``q`` (4, 2) or (..., 4, 2), ``m`` (..., 4, 2) in px -> scale (...,),
    translation (..., 2) and RMS residual (...,) in px."""
    q = np.broadcast_to(q, m.shape).astype(np.float64)
    m = m.astype(np.float64)
    qc = q - q.mean(axis=-2, keepdims=True)
    mc = m - m.mean(axis=-2, keepdims=True)
    s = (qc * mc).sum(axis=(-1, -2)) / np.maximum((qc * qc).sum(axis=(-1, -2)), 1e-12)
    t = m.mean(axis=-2) - s[..., None] * q.mean(axis=-2)
    resid = m - (s[..., None, None] * q + t[..., None, :])
    rms = np.sqrt((resid * resid).sum(axis=-1).mean(axis=-1))
    return s, t, rms


def verification_scores(
    q_centres: np.ndarray, q_sizes: np.ndarray, m_centres: np.ndarray, m_sizes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What ``verify`` compares with its thresholds, so that several thresholds
    can be tried on one set of candidates (shapes as in ``verify``).

    Returns, each (...,): ``positive`` (the fitted scale is > 0), ``residual``
    (RMS misfit / fitted square side; inf where not positive) and ``scale``
    (the worst matched patch side over the fitted query patch side, as a ratio
    >= 1 either way; inf where not positive).
    """
    s, _, rms = fit_scale_translation(q_centres, m_centres)
    qc = np.broadcast_to(q_centres, m_centres.shape)
    # a square of side L has its corners at L / sqrt(2) from its centre
    side = np.sqrt(2.0 * ((qc - qc.mean(axis=-2, keepdims=True)) ** 2).sum(axis=-1).mean(axis=-1))
    positive = s > 0
    s_safe = np.where(positive, s, 1.0)
    residual = np.where(positive, rms / (s_safe * np.maximum(side, 1e-12)), np.inf)
    ratio = m_sizes / (s_safe[..., None] * np.broadcast_to(q_sizes, m_sizes.shape))
    scale = np.where(positive, np.maximum(ratio, 1.0 / ratio).max(axis=-1), np.inf)
    return positive, residual, scale


def verify(
    q_centres: np.ndarray,
    q_sizes: np.ndarray,
    m_centres: np.ndarray,
    m_sizes: np.ndarray,
    max_residual: float,
    max_scale_ratio: float,
) -> np.ndarray:
    """Boolean (...,): which candidates pass (see module doc).

    ``q_centres`` (..., 4, 2) and ``q_sizes`` (..., 4) for the query patches
    (broadcast against the candidates), ``m_centres`` (..., 4, 2) and
    ``m_sizes`` (..., 4) for the matched patches; px.
    """
    positive, residual, scale = verification_scores(q_centres, q_sizes, m_centres, m_sizes)
    return positive & (residual <= max_residual) & (scale <= max_scale_ratio)
