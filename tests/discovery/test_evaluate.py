import pandas as pd
import pytest

from ctx_core.discovery.evaluate import curve_area, evaluation_objects, member_hits, purity_at, purity_coverage


def objects() -> pd.DataFrame:
    """VOC boxes, 1-based inclusive: xmin..xmax covers [xmin - 1, xmax]."""
    rows = [
        ("a", "cat", 1, 1, 50, 50, False),
        ("a", "dog", 61, 61, 100, 100, False),
        ("a", "cat", 101, 101, 120, 120, True),  # difficult: neither scored nor counted
        ("b", "cat", 1, 1, 40, 40, False),
        ("b", "dog", 51, 51, 90, 90, False),
    ]
    return pd.DataFrame(rows, columns=["image_id", "class", "xmin", "ymin", "xmax", "ymax", "difficult"])


def clusters() -> pd.DataFrame:
    rows = [
        # rank 1: centres (50, 20) on a's cat (on its right edge), (20, 20) on b's cat,
        # (70, 70) on b's dog, (145, 145) on nothing -> majority cat, 2 of 4 pure
        (7, 1, "a", 0, 0, 100, 40), (7, 1, "b", 10, 10, 30, 30), (7, 1, "b", 60, 60, 80, 80),
        (7, 1, "a", 140, 140, 150, 150),
        # rank 2: centres (80, 80) and (67, 67) both on a's dog -> 2 of 2 pure
        (3, 2, "a", 70, 70, 90, 90), (3, 2, "a", 62, 62, 72, 72),
    ]
    frame = pd.DataFrame(rows, columns=["cluster_id", "rank", "image_id", "x0", "y0", "x1", "y1"])
    return frame.assign(role="match", score=1.0, similarity=0.5)


def test_member_hits_use_box_centres_inside_inclusive_voc_boxes():
    objs = objects()
    hits = member_hits(clusters(), objs[~objs["difficult"]])
    assert sorted(map(tuple, hits[["member", "instance"]].to_numpy().tolist())) == [(0, 0), (1, 2), (2, 3), (4, 1), (5, 1)]


def test_purity_coverage_against_a_hand_computed_case():
    objs = objects()
    curve = purity_coverage(clusters(), objs[~objs["difficult"]].reset_index(drop=True))
    assert curve["majority_class"].tolist() == ["cat", "dog"]
    assert curve["cluster_purity"].tolist() == [0.5, 1.0]
    # cumulative: 2 pure of 4, then 4 of 6; instances touched: 3 of 4 (a-cat, b-cat, b-dog), then all 4
    assert curve["purity"].tolist() == pytest.approx([0.5, 4 / 6])
    assert curve["coverage"].tolist() == pytest.approx([0.75, 1.0])
    assert curve_area(curve) == pytest.approx(0.5 * 0.75 + (4 / 6) * 0.25)
    assert purity_at(curve, 0.25) == 0.5 and purity_at(curve, 0.8) == pytest.approx(4 / 6)
    assert purity_at(curve.iloc[:1], 0.8) is None


def test_a_cluster_on_nothing_is_wholly_impure():
    objs = objects()
    lost = clusters().iloc[3:4]
    curve = purity_coverage(lost, objs[~objs["difficult"]].reset_index(drop=True))
    assert curve["majority_class"].tolist() == [""] and curve["purity"].tolist() == [0.0]
    assert curve["coverage"].tolist() == [0.0]


def test_evaluation_is_skipped_without_labelled_images_or_boxes():
    manifest = pd.DataFrame({"image_id": ["a", "b"], "split": ["unlabeled", "unlabeled"]})
    _, _, why = evaluation_objects(manifest, objects(), {"a", "b"})
    assert "none of the 2 images is in a labelled split" in why
    manifest["split"] = "test"
    _, _, why = evaluation_objects(manifest, objects().iloc[:0], {"a", "b"})
    assert "no non-difficult object boxes" in why
    labelled, objs, why = evaluation_objects(manifest, objects(), {"a"})
    assert why is None and labelled == {"a"} and len(objs) == 2
