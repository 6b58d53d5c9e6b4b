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
    s, _, rms = fit_scale_translation(q_centres, m_centres)
    qc = np.broadcast_to(q_centres, m_centres.shape)
    # a square of side L has its corners at L / sqrt(2) from its centre
    side = np.sqrt(2.0 * ((qc - qc.mean(axis=-2, keepdims=True)) ** 2).sum(axis=-1).mean(axis=-1))
    positive = s > 0
    s_safe = np.where(positive, s, 1.0)
    residual_ok = rms <= max_residual * s_safe * np.maximum(side, 1e-12)
    ratio = m_sizes / (s_safe[..., None] * np.broadcast_to(q_sizes, m_sizes.shape))
    scale_ok = ((ratio <= max_scale_ratio) & (ratio >= 1.0 / max_scale_ratio)).all(axis=-1)
    return positive & residual_ok & scale_ok
