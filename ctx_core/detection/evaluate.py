"""PASCAL VOC detection average precision, as the devkit computes it, vectorised.

Per class, detections are ranked by score (ties keep their input order). A
detection is compared with the ground truth of its class in its image and
takes the one of highest IoU (devkit ``jmax``), whether or not it is taken;
with IoU >= 0.5 it is

- ignored (neither true nor false positive) when that object is ``difficult``,
- a true positive when it is the first detection, in rank order, to take it,
- a false positive otherwise (a second match to the same object);

below 0.5 it is a false positive. IoU uses the devkit's inclusive pixels:
a box ``xmin..xmax`` is ``xmax - xmin + 1`` wide. Recall counts the
non-difficult objects. Because each detection's best object does not depend on
the others, "first to take it" is a ``np.unique`` over (object, rank), and no
loop runs over detections.

AP: ``voc07`` is the 11-point interpolated AP of VOC2007 (mean over recall
thresholds 0, 0.1, ..., 1 of the best precision at recall >= t); ``area`` is
the area under the monotone precision envelope (VOC2010 and later).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from ctx_core.store.labelled import DetectionSplit

METRICS = ("voc07", "area")
IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class ClassDetections:
    """Detections of one class. ``image_ids``: (M,) str; ``scores``: float64 (M,);
    ``boxes``: float64 (M, 4) xmin, ymin, xmax, ymax in 1-based inclusive pixels."""

    image_ids: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray

    @staticmethod
    def empty() -> "ClassDetections":
        return ClassDetections(np.zeros(0, dtype=object), np.zeros(0), np.zeros((0, 4)))


@dataclass(frozen=True)
class ClassGroundTruth:
    """Objects of one class. ``image_index``: int64 (G,) into the split's images;
    ``boxes``: float64 (G, 4) VOC pixels; ``difficult``: bool (G,)."""

    image_index: np.ndarray
    boxes: np.ndarray
    difficult: np.ndarray


@dataclass(frozen=True)
class ClassResult:
    """``recall``/``precision``: float64 (M,) after each ranked detection."""

    ap: float
    recall: np.ndarray
    precision: np.ndarray
    positives: int
    detections: int
    true_positives: int


@dataclass(frozen=True)
class EvalResult:
    metric: str
    classes: tuple[str, ...]
    per_class: dict[str, ClassResult]
    notes: tuple[str, ...] = field(default=())

    @property
    def ap(self) -> dict[str, float]:
        return {c: self.per_class[c].ap for c in self.classes}

    @property
    def mean_ap(self) -> float:
        return float(np.mean([self.per_class[c].ap for c in self.classes])) if self.classes else 0.0


def voc_iou(det: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU with the devkit's +1 on widths and heights; ``det`` (..., 4) and ``gt`` (..., 4) broadcast."""
    iw = np.minimum(det[..., 2], gt[..., 2]) - np.maximum(det[..., 0], gt[..., 0]) + 1.0
    ih = np.minimum(det[..., 3], gt[..., 3]) - np.maximum(det[..., 1], gt[..., 1]) + 1.0
    inter = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)
    area_d = (det[..., 2] - det[..., 0] + 1.0) * (det[..., 3] - det[..., 1] + 1.0)
    area_g = (gt[..., 2] - gt[..., 0] + 1.0) * (gt[..., 3] - gt[..., 1] + 1.0)
    return inter / (area_d + area_g - inter)


def average_precision(recall: np.ndarray, precision: np.ndarray, metric: str = "voc07") -> float:
    """AP from a ranked PR curve (arrays (M,)); ``metric`` is ``voc07`` or ``area``."""
    if metric == "voc07":
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            above = precision[recall >= t]
            ap += (above.max() if above.size else 0.0) / 11.0
        return float(ap)
    if metric == "area":
        mrec = np.concatenate(([0.0], recall, [1.0]))
        mpre = np.concatenate(([0.0], precision, [0.0]))
        mpre = np.maximum.accumulate(mpre[::-1])[::-1]
        i = np.flatnonzero(mrec[1:] != mrec[:-1])
        return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))
    raise ValueError(f"metric {metric!r}: expected one of {', '.join(METRICS)}")


def ground_truth(split: DetectionSplit) -> dict[str, ClassGroundTruth]:
    """The objects of each class in ``split``, with the index of their image (one pass over the split)."""
    counts = [len(r.names) for r in split.images]
    names = np.array([n for r in split.images for n in r.names], dtype=object)
    index = np.repeat(np.arange(len(split.images)), counts)
    boxes = np.concatenate([r.boxes for r in split.images]) if names.size else np.zeros((0, 4))
    difficult = np.concatenate([r.difficult for r in split.images]) if names.size else np.zeros(0, bool)
    out = {}
    for cls in np.unique(names) if names.size else []:
        mask = names == cls
        out[str(cls)] = ClassGroundTruth(index[mask], boxes[mask], difficult[mask])
    return out


def evaluate_class(gt: ClassGroundTruth, n_images: int, image_index: np.ndarray, scores: np.ndarray,
                   boxes: np.ndarray, metric: str = "voc07") -> ClassResult:
    """AP of one class. ``image_index``: int64 (M,) into the split's images; ``scores`` (M,); ``boxes`` (M, 4)."""
    positives = int((~gt.difficult).sum())
    m = len(scores)
    if m == 0:
        return ClassResult(0.0, np.zeros(0), np.zeros(0), positives, 0, 0)
    order = np.argsort(-scores, kind="stable")
    image_index, boxes = image_index[order], boxes[order]

    # slots[i, j]: the j-th object of image i (or -1), so each detection gathers
    # its image's objects as one (M, G_max) block.
    g_order = np.argsort(gt.image_index, kind="stable")
    counts = np.bincount(gt.image_index, minlength=n_images)
    width = max(int(counts.max()) if counts.size else 0, 1)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank_in_image = np.arange(len(g_order)) - np.repeat(starts, counts)
    slots = np.full((n_images, width), -1, dtype=np.int64)
    slots[gt.image_index[g_order], rank_in_image] = g_order

    cand = slots[image_index]  # (M, G_max)
    valid = cand >= 0
    iou = voc_iou(boxes[:, None, :], gt.boxes[np.where(valid, cand, 0)] if len(gt.boxes) else np.zeros((m, width, 4)))
    iou = np.where(valid, iou, -np.inf)
    best = iou.argmax(axis=1)
    overlap = iou[np.arange(m), best]
    target = cand[np.arange(m), best]
    hit = overlap >= IOU_THRESHOLD
    hit_difficult = hit & gt.difficult[np.where(hit, target, 0)] if len(gt.boxes) else np.zeros(m, bool)
    claims = hit & ~hit_difficult
    tp = np.zeros(m)
    claim_rank = np.flatnonzero(claims)
    _, first = np.unique(target[claim_rank], return_index=True)
    tp[claim_rank[first]] = 1.0
    fp = (~hit_difficult).astype(np.float64) - tp
    ctp, cfp = np.cumsum(tp), np.cumsum(fp)
    recall = ctp / positives if positives else np.zeros(m)
    precision = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
    return ClassResult(average_precision(recall, precision, metric), recall, precision, positives, m, int(tp.sum()))


def evaluate_detections(split: DetectionSplit, detections: Mapping[str, ClassDetections], classes: Sequence[str],
                        metric: str = "voc07") -> EvalResult:
    """Per-class AP of ``detections`` against ``split`` for ``classes``.

    Detections on images outside the split are left out and counted in ``notes``.
    """
    index_of = {r.image_id: k for k, r in enumerate(split.images)}
    objects = ground_truth(split)
    none = ClassGroundTruth(np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0, bool))
    per_class, notes = {}, []
    for cls in classes:
        dets = detections.get(cls, ClassDetections.empty())
        idx = np.fromiter((index_of.get(i, -1) for i in dets.image_ids), np.int64, len(dets.image_ids))
        known = idx >= 0
        if not known.all():
            notes.append(f"{cls}: {int((~known).sum())} detections on images outside split {split.split!r} left out")
        per_class[cls] = evaluate_class(objects.get(cls, none), len(split.images), idx[known],
                                        dets.scores[known], dets.boxes[known], metric)
    return EvalResult(metric, tuple(classes), per_class, tuple(notes))
