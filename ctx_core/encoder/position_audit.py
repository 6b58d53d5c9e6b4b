"""Does a trained encoder know where in the image a patch came from?

Context prediction can be solved without understanding objects when a patch's
*absolute* position is visible in it (chromatic aberration, vignetting, a
ground texture that coarsens towards the bottom of the synthetic scenes):
each patch then reveals where it sits, and the relative position follows.
The audit measures how much absolute position a frozen encoder's features
carry: a linear (ridge) regressor from one patch's features to the patch
centre's normalised position (x / W, y / H), fitted on the patches of some
images and scored on the patches of other images. The score is

    ratio = RMSE(regressor) / RMSE(always guessing the centre 0.5, 0.5)

1.0: the features say nothing about position; 0: they give it exactly. The
same audit of a random-init tower of the same architecture is the reference
(random conv features carry some position through the image statistics
alone). The intervals are percentile bootstraps over the scored images,
paired between the two encoders.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ctx_core.encoder.artifact import EncoderContract
from ctx_core.encoder.embed import Embedder
from ctx_core.stats import Interval, bootstrap, bootstrap_indices
from ctx_core.store.images import UnreadableImageError, read_image

log = logging.getLogger(__name__)

# the learned encoder is flagged when its ratio is this much below random-init's,
# with the paired interval of the difference excluding 0
MARGIN = 0.05


@dataclass(frozen=True)
class AuditResult:
    """Position RMSE relative to guessing the centre, per encoder (``learned``, ``random_init``),
    and the paired difference learned - random_init."""

    ratios: dict[str, Interval]
    difference: Interval
    images_fit: int
    images_scored: int
    patches_per_image: int

    @property
    def shortcut(self) -> bool:
        """True when the learned encoder carries clearly more absolute position than random-init."""
        d = self.difference
        return d.defined and d.high < 0 and d.mean < -MARGIN

    def warning(self) -> str | None:
        if not self.shortcut:
            return None
        return (f"the trained encoder carries more absolute position than a random-init one: position RMSE / "
                f"centre-guess RMSE {self.ratios['learned'].mean:.2f} vs {self.ratios['random_init'].mean:.2f} "
                f"(difference {self.difference.format(signed=True, digits=2)} images); patches may reveal where they "
                "sit (a shortcut for the pretext task); see docs/pretraining.md#position-audit")

    def metrics(self, prefix: str = "position_") -> dict[str, float]:
        out: dict[str, float] = {}
        for name, ci in self.ratios.items():
            out.update({f"{prefix}ratio_{name}": ci.mean, f"{prefix}ratio_{name}_low": ci.low,
                        f"{prefix}ratio_{name}_high": ci.high})
        out.update({f"{prefix}difference": self.difference.mean, f"{prefix}difference_low": self.difference.low,
                    f"{prefix}difference_high": self.difference.high, f"{prefix}shortcut": float(self.shortcut),
                    f"{prefix}images_scored": float(self.images_scored)})
        return out


def sample_patches(paths: Sequence[Path], patch: int, per_image: int, seed: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """``per_image`` random ``patch``-px squares of each image (images smaller than a patch, or that
    cannot be read, are skipped and logged: an audit never stops a run).

    Returns float pixels (N, 3, patch, patch), normalised centres (N, 2) in [0, 1] and the image index (N,)."""
    rng = np.random.default_rng(seed)
    crops, centres, owner = [], [], []
    for k, path in enumerate(paths):
        try:
            img = read_image(path)
        except UnreadableImageError as exc:
            log.warning("position audit skips %s", exc)
            continue
        _, h, w = img.shape
        if h < patch or w < patch:
            continue
        xs = rng.integers(0, w - patch + 1, per_image)
        ys = rng.integers(0, h - patch + 1, per_image)
        for x, y in zip(xs, ys):
            crops.append(img[:, y:y + patch, x:x + patch])
            centres.append(((x + patch / 2) / w, (y + patch / 2) / h))
            owner.append(k)
    if not crops:
        return torch.zeros(0, 3, patch, patch), np.zeros((0, 2)), np.zeros(0, np.int64)
    return torch.stack(crops).float(), np.asarray(centres, np.float64), np.asarray(owner, np.int64)


def _embed(embedder: Embedder, pixels: torch.Tensor, contract: EncoderContract, batch: int = 512) -> np.ndarray:
    out = [embedder.embed(contract.preprocess(pixels[i:i + batch])) for i in range(0, len(pixels), batch)]
    return torch.cat(out).numpy().astype(np.float64)


def _fit_predict(features: np.ndarray, targets: np.ndarray, fit: np.ndarray, score: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13)))
    model.fit(features[fit], targets[fit])
    return np.clip(model.predict(features[score]), 0.0, 1.0)


def audit_position(embedders: dict[str, Embedder], contract: EncoderContract, paths: Sequence[Path],
                   patches_per_image: int = 16, seed: int = 0, resamples: int = 1000) -> AuditResult:
    """Audit each of ``embedders`` (keys ``learned`` and ``random_init``) on the same patches.

    The images are shuffled with ``seed`` and halved: the regressor is fitted on the
    first half's patches and scored on the second half's."""
    if len(paths) < 4:
        raise ValueError(f"the position audit needs at least 4 images, got {len(paths)}")
    order = np.random.default_rng(seed).permutation(len(paths))
    paths = [paths[i] for i in order]
    pixels, centres, owner = sample_patches(paths, contract.patch_size, patches_per_image, seed)
    half = len(paths) // 2
    fit, score = owner < half, owner >= half
    scored_owner = owner[score] - half
    n_scored = len(paths) - half
    baseline = ((centres[score] - 0.5) ** 2).sum(axis=1)
    errors = {}
    for name, embedder in embedders.items():
        pred = _fit_predict(_embed(embedder, pixels, contract), centres, fit, score)
        errors[name] = ((pred - centres[score]) ** 2).sum(axis=1)

    def ratio(err: np.ndarray):
        per_image_err = np.bincount(scored_owner, err, minlength=n_scored)
        per_image_base = np.bincount(scored_owner, baseline, minlength=n_scored)

        def stat(idx: np.ndarray) -> float:
            b = per_image_base[idx].sum()
            return math.sqrt(per_image_err[idx].sum() / b) if b > 0 else float("nan")

        return stat

    idx = bootstrap_indices(n_scored, resamples, seed)
    ratios = {name: bootstrap(ratio(err), n_scored, resamples, seed, indices=idx) for name, err in errors.items()}
    names = list(errors)
    if "learned" in errors and "random_init" in errors:
        a, b = ratio(errors["learned"]), ratio(errors["random_init"])
        difference = bootstrap(lambda i: a(i) - b(i), n_scored, resamples, seed, indices=idx)
    else:
        difference = Interval(float("nan"), float("nan"), float("nan"), 0)
    del names
    return AuditResult(ratios, difference, half, n_scored, patches_per_image)
