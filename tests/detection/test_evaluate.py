"""VOC AP against hand-computed cases and against the devkit's per-detection loop."""

from pathlib import Path

import numpy as np
import pytest

from ctx_core.detection.evaluate import ClassDetections, average_precision, evaluate_detections, voc_iou
from ctx_core.store.labelled import DetectionSplit, ImageRecord
from tests.detection.devkit_reference import devkit_ap


def split_of(gt: dict) -> DetectionSplit:
    """``gt``: image_id -> [(class, (xmin, ymin, xmax, ymax), difficult)]."""
    records = []
    for image_id, objs in gt.items():
        records.append(ImageRecord(
            image_id, Path(f"{image_id}.jpg"), 100, 100, tuple(o[0] for o in objs),
            np.array([o[1] for o in objs], float).reshape(-1, 4),
            np.array([o[2] for o in objs], bool), np.zeros(len(objs), bool)))
    classes = tuple(sorted({o[0] for objs in gt.values() for o in objs}))
    return DetectionSplit(Path("."), "test", classes, tuple(records))


def dets(*rows) -> ClassDetections:
    """rows: (image_id, score, (xmin, ymin, xmax, ymax)) in file order."""
    return ClassDetections(np.array([r[0] for r in rows], dtype=object), np.array([r[1] for r in rows], float),
                           np.array([r[2] for r in rows], float).reshape(-1, 4))


def ap(gt, detections, metric="voc07", cls="a"):
    return evaluate_detections(split_of(gt), {cls: detections}, [cls], metric).per_class[cls]


G1, G2 = (1, 1, 10, 10), (21, 21, 30, 30)


def test_duplicate_is_a_false_positive():
    # ranks: TP (G1), FP (second hit on G1), TP (G2): recall .5 .5 1, precision 1 .5 2/3
    r = ap({"i": [("a", G1, False), ("a", G2, False)]}, dets(("i", .9, G1), ("i", .8, G1), ("i", .7, G2)))
    assert r.true_positives == 2 and r.positives == 2
    np.testing.assert_allclose(r.precision, [1, .5, 2 / 3])
    assert r.ap == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)  # thresholds 0..0.5 see 1, 0.6..1 see 2/3
    r = ap({"i": [("a", G1, False), ("a", G2, False)]}, dets(("i", .9, G1), ("i", .8, G1), ("i", .7, G2)), "area")
    assert r.ap == pytest.approx(.5 * 1 + .5 * 2 / 3)


def test_best_object_is_taken_even_when_already_matched():
    # the second detection overlaps G1 (IoU 90/110) more than its neighbour (70/130): a FP, no fallback
    near = (5, 1, 14, 10)
    r = ap({"i": [("a", G1, False), ("a", near, False)]}, dets(("i", .9, G1), ("i", .8, (2, 1, 11, 10))))
    assert r.true_positives == 1 and r.recall[-1] == .5


def test_matches_to_difficult_objects_are_ignored():
    gt = {"i": [("a", G1, True), ("a", G2, False)]}
    r = ap(gt, dets(("i", .9, G1), ("i", .8, G2), ("i", .6, (60, 60, 70, 70))))
    assert r.positives == 1 and r.true_positives == 1
    np.testing.assert_allclose(r.recall, [0, 1, 1])
    np.testing.assert_allclose(r.precision, [0, 1, .5])  # the ignored first rank is neither TP nor FP
    assert r.ap == pytest.approx(1.0)
    # a weak overlap with a difficult object is an ordinary false positive
    r = ap(gt, dets(("i", .9, (1, 1, 4, 4)), ("i", .8, G2)))
    np.testing.assert_allclose(r.precision, [0, .5])


def test_inclusive_pixels_plus_one():
    assert voc_iou(np.array([1., 1, 10, 5]), np.array([1., 1, 10, 10])) == pytest.approx(0.5)  # 50 / 100 px
    assert voc_iou(np.array([1., 1, 1, 1]), np.array([1., 1, 1, 1])) == pytest.approx(1.0)  # a one-pixel box
    # without +1 this IoU would be 36/81 < 0.5 and the detection a miss
    assert ap({"i": [("a", G1, False)]}, dets(("i", .5, (1, 1, 10, 5)))).ap == pytest.approx(1.0)


def test_no_detections_give_zero():
    split = split_of({"i": [("a", G1, False), ("b", G2, False)]})
    result = evaluate_detections(split, {"a": dets(("i", .9, G1))}, ["a", "b"])
    assert result.ap == pytest.approx({"a": 1.0, "b": 0.0}) and result.mean_ap == pytest.approx(.5)
    assert result.per_class["b"].detections == 0


def test_ties_keep_file_order():
    gt = {"i": [("a", G1, False)], "j": [("a", G2, False)]}
    miss_first = dets(("i", .5, G2), ("j", .5, G2))  # FP then TP: recall 0, 1/2; precision 0, 1/2
    hit_first = dets(("j", .5, G2), ("i", .5, G2))   # TP then FP: recall 1/2, 1/2; precision 1, 1/2
    assert ap(gt, miss_first).ap == pytest.approx(6 * .5 / 11)  # thresholds 0 .. 0.5 see precision 1/2
    assert ap(gt, hit_first).ap == pytest.approx(6 * 1 / 11)
    assert ap(gt, miss_first, "area").ap == pytest.approx(.5 * .5)
    assert ap(gt, hit_first, "area").ap == pytest.approx(.5 * 1)


def test_detections_outside_the_split_are_noted():
    split = split_of({"i": [("a", G1, False)]})
    result = evaluate_detections(split, {"a": dets(("i", .9, G1), ("zz", .8, G1))}, ["a"])
    assert result.ap["a"] == pytest.approx(1.0) and "1 detections on images outside" in result.notes[0]


def test_average_precision_metrics_on_a_known_curve():
    rec, prec = np.array([.2, .4, .4, .8]), np.array([1., 1., .5, .5])
    # voc07: t = 0 .. 0.4 -> 1 (5 thresholds), 0.5 .. 0.8 -> .5 (4), 0.9, 1.0 -> 0
    assert average_precision(rec, prec, "voc07") == pytest.approx((5 + 4 * .5) / 11)
    assert average_precision(rec, prec, "area") == pytest.approx(.4 * 1 + .4 * .5)
    with pytest.raises(ValueError, match="voc07, area"):
        average_precision(rec, prec, "coco")


@pytest.mark.parametrize("metric", ["voc07", "area"])
def test_vectorised_ap_equals_the_devkit_loop(metric):
    rng = np.random.default_rng(3)
    gt, rows = {}, []
    for k in range(40):
        objs = []
        for _ in range(rng.integers(0, 4)):
            x, y = rng.integers(1, 60, 2)
            objs.append(("a", (x, y, x + rng.integers(5, 30), y + rng.integers(5, 30)), bool(rng.random() < .2)))
        gt[f"im{k}"] = objs
        for x0, y0, x1, y1 in [o[1] for o in objs] * 2:
            jitter = rng.integers(-4, 5, 4)
            rows.append((f"im{k}", float(np.round(rng.random(), 1)), (x0 + jitter[0], y0 + jitter[1], x1 + jitter[2], y1 + jitter[3])))
        for _ in range(rng.integers(0, 3)):
            x, y = rng.integers(1, 80, 2)
            rows.append((f"im{k}", float(np.round(rng.random(), 1)), (x, y, x + 10, y + 10)))
    split = split_of({i: o for i, o in gt.items() if o} | {i: [] for i, o in gt.items() if not o})
    ours = evaluate_detections(split, {"a": dets(*rows)}, ["a"], metric).ap["a"]
    reference = devkit_ap({i: [(o[1], o[2]) for o in objs] for i, objs in gt.items()}, rows, metric)
    assert ours == pytest.approx(reference, abs=1e-12) and 0 < ours < 1
