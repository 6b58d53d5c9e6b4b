"""The three frozen-feature protocols, on features computed once per featuriser.

- **VOC07 classification** (Goyal, Mahajan, Gupta & Misra, ICCV 2019): one
  linear SVM per class on L2-normalised image features, positives weighted 2
  to 1 as in their benchmark, the cost C chosen by k-fold cross-validation on
  the training split only (scored by average precision), then test AP per
  class. VOC marks objects *difficult*; an image whose only objects of a class
  are difficult is left out of that class's training and scoring, as the VOC07
  devkit does.
- **kNN** on object crops (Wu et al. 2018; Caron et al. 2021): cosine
  similarity to every training crop, the ``k`` nearest vote with weight
  ``exp(sim / T)``, top-1 accuracy.
- **Logistic regression** on the same crops: multinomial, standardised
  features, C by cross-validation on the training split.

Each protocol returns per-test-item quantities (scores, correctness) so that
the bootstrap over test images recomputes the metric without refitting.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

POSITIVE_WEIGHT = 2.0


@dataclass(frozen=True)
class SvmScores:
    """Per class: test scores (n_test,), labels (n_test,) in {1, 0, -1 (ignored: difficult only)},
    and the C cross-validation chose; ``skipped``: class -> why it is not in the mean."""

    scores: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    costs: dict[str, float]
    skipped: dict[str, str] = field(default_factory=dict)
    unconverged: list[str] = field(default_factory=list)  # classes where liblinear hit max_iter for some C in CV


def l2_normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def svm_voc07(train_x: np.ndarray, train_y: dict[str, np.ndarray], test_x: np.ndarray, test_y: dict[str, np.ndarray],
              costs: tuple[float, ...], folds: int, seed: int, dual: bool = False) -> SvmScores:
    """Per-class linear SVMs (``sklearn.svm.LinearSVC``: squared hinge, L2, as Goyal et al.),
    C by ``folds``-fold CV on the training images. ``dual``: liblinear's dual coordinate descent
    instead of its primal Newton solver (the same objective; the benchmark's reference)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.svm import LinearSVC

    train_x, test_x = l2_normalise(train_x), l2_normalise(test_x)
    scores, labels, chosen, skipped, unconverged = {}, {}, {}, {}, []
    for cls, y in train_y.items():
        keep = y >= 0
        positives = int((y[keep] == 1).sum())
        if positives < folds or (keep.sum() - positives) < folds:
            skipped[cls] = f"{positives} positive training images; cross-validation needs {folds}"
            continue
        if not (test_y[cls] == 1).any():
            skipped[cls] = "no positive test image"
            continue
        search = GridSearchCV(
            # the primal solver (liblinear's trust-region Newton) minimises the same objective as
            # the dual one (squared hinge, L2) but does not slow down as C grows: 8 s instead of
            # 53 s for the learned encoder's 10 classes x 6 costs x 3 folds, the same mAP (60.36
            # vs 60.35) and the same C for 9 of 10 classes (benchmarks/bench_probe.py)
            LinearSVC(class_weight={1: POSITIVE_WEIGHT, 0: 1.0}, dual=dual, max_iter=5000),
            {"C": list(costs)}, scoring="average_precision",
            cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            search.fit(train_x[keep], y[keep])
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            unconverged.append(cls)
        scores[cls] = search.decision_function(test_x)
        labels[cls] = test_y[cls]
        chosen[cls] = float(search.best_params_["C"])
    return SvmScores(scores, labels, chosen, skipped, unconverged)


def weighted_average_precision(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision (the area under the step precision-recall curve, as
    ``sklearn.metrics.average_precision_score``) of one ranking under many item weightings.

    ``scores``, ``labels`` (1 positive, 0 negative, -1 ignored): (n,); ``weights``: (B, n) item
    counts (a bootstrap resample's multiplicities). Returns (B,), NaN where no positive has weight.
    Ties in ``scores`` are broken by order (continuous SVM scores have none in practice)."""
    order = np.argsort(-scores, kind="stable")
    y = labels[order]
    w = weights[:, order] * (y >= 0)
    pos = w * (y == 1)
    tp = np.cumsum(pos, axis=1)
    seen = np.cumsum(w, axis=1)
    precision = np.divide(tp, seen, out=np.zeros_like(tp, dtype=np.float64), where=seen > 0)
    total = pos.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (precision * pos).sum(axis=1) / total, np.nan)


def knn_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, k: int, temperature: float,
                n_classes: int, block: int = 1024) -> np.ndarray:
    """Weighted kNN: cosine similarity, the ``k`` most similar training items vote ``exp(sim / T)``."""
    a, b = l2_normalise(train_x).astype(np.float32), l2_normalise(test_x).astype(np.float32)
    k = min(k, len(a))
    out = np.empty(len(b), np.int64)
    for start in range(0, len(b), block):
        sim = b[start:start + block] @ a.T
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        s = np.take_along_axis(sim, top, axis=1)
        votes = np.zeros((len(sim), n_classes))
        np.add.at(votes, (np.arange(len(sim))[:, None].repeat(k, 1), train_y[top]), np.exp(s / temperature))
        out[start:start + block] = votes.argmax(axis=1)
    return out


def logistic_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, folds: int, seed: int) -> tuple[np.ndarray, float]:
    """Multinomial logistic regression on standardised features, C by ``folds``-fold CV; (predictions, C)."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    counts = np.bincount(train_y)
    folds = max(2, min(folds, int(counts[counts > 0].min())))
    model = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=np.logspace(-3, 1, 5).tolist(), cv=folds,
                                                                 scoring="accuracy", max_iter=2000, random_state=seed,
                                                                 l1_ratios=(0.0,), use_legacy_attributes=False))
    model.fit(train_x, train_y)
    return model.predict(test_x), float(np.ravel(model[-1].C_)[0])
