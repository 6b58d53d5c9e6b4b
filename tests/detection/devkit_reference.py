"""The PASCAL devkit's ``voc_eval`` as a plain per-detection loop (after
``voc_eval.py`` of py-faster-rcnn), the reference the vectorised AP is checked
and timed against."""

import numpy as np


def devkit_ap(gt: dict, detections: list, metric: str = "voc07") -> float:
    """``gt``: image_id -> list of (box, difficult); ``detections``: (image_id, score, box) in file order."""
    records = {i: {"bbox": np.array([b for b, _ in objs]).reshape(-1, 4), "difficult": np.array([d for _, d in objs], bool),
                   "det": [False] * len(objs)} for i, objs in gt.items()}
    npos = sum(int((~r["difficult"]).sum()) for r in records.values())
    order = sorted(range(len(detections)), key=lambda k: -detections[k][1])  # stable: ties keep file order
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    for d, k in enumerate(order):
        image_id, _, bb = detections[k]
        r = records.get(image_id, {"bbox": np.zeros((0, 4)), "difficult": np.zeros(0, bool), "det": []})
        ovmax, jmax = -np.inf, -1
        for j, g in enumerate(r["bbox"]):
            iw = max(min(bb[2], g[2]) - max(bb[0], g[0]) + 1.0, 0.0)
            ih = max(min(bb[3], g[3]) - max(bb[1], g[1]) + 1.0, 0.0)
            inter = iw * ih
            union = (bb[2] - bb[0] + 1.0) * (bb[3] - bb[1] + 1.0) + (g[2] - g[0] + 1.0) * (g[3] - g[1] + 1.0) - inter
            if inter / union > ovmax:
                ovmax, jmax = inter / union, j
        if ovmax >= 0.5:
            if not r["difficult"][jmax]:
                if not r["det"][jmax]:
                    tp[d] = 1.0
                    r["det"][jmax] = True
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec = tp / npos if npos else np.zeros_like(tp)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    if metric == "voc07":
        return float(sum((prec[rec >= t].max() if (rec >= t).any() else 0.0) for t in np.arange(0.0, 1.1, 0.1)) / 11.0)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))
