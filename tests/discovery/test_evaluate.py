import numpy as np
import pandas as pd
import pytest

from ctx_core.discovery.evaluate import (
    CURVE_COLUMNS, curve_area, evaluation_split, member_hits, purity_at, purity_coverage,
)
from ctx_core.store.layout import in_val


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


def loop_purity_coverage(clusters: pd.DataFrame, objects: pd.DataFrame) -> pd.DataFrame:
    """The definitions of the module doc, cluster by cluster in plain Python."""
    rows, touched, total, pure_total = [], set(), 0, 0
    for rank in sorted(set(clusters["rank"])):
        group = clusters[clusters["rank"] == rank]
        on = [[(i, o["class"]) for i, o in objects.iterrows() if o["image_id"] == m.image_id
               and o["xmin"] - 1 <= (m.x0 + m.x1) / 2 <= o["xmax"] and o["ymin"] - 1 <= (m.y0 + m.y1) / 2 <= o["ymax"]]
              for m in group.itertuples()]
        votes: dict[str, int] = {}
        for member in on:
            for cls in {c for _, c in member}:
                votes[cls] = votes.get(cls, 0) + 1
        majority = min(c for c in votes if votes[c] == max(votes.values())) if votes else ""
        pure = sum(any(c == majority for _, c in member) for member in on)
        touched |= {i for member in on for i, _ in member}
        total += len(group)
        pure_total += pure
        rows.append([rank, group["cluster_id"].iloc[0], majority, len(group), pure, pure / len(group),
                     pure_total / total, len(touched) / len(objects)])
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def test_purity_coverage_equals_a_plain_loop_on_random_clusters():
    rng = np.random.default_rng(3)
    images = [f"im{i}" for i in range(6)]
    xy = rng.integers(0, 80, size=(30, 2))
    objs = pd.DataFrame({"image_id": rng.choice(images, 30), "class": rng.choice(["cat", "dog", "cow"], 30),
                         "xmin": xy[:, 0] + 1, "ymin": xy[:, 1] + 1, "xmax": xy[:, 0] + rng.integers(10, 40, 30),
                         "ymax": xy[:, 1] + rng.integers(10, 40, 30), "difficult": False})
    ranks = rng.integers(1, 15, size=120)
    x0, y0 = rng.integers(0, 100, size=(2, 120))
    clus = pd.DataFrame({"cluster_id": ranks * 10, "rank": ranks, "image_id": rng.choice(images, 120), "x0": x0,
                         "y0": y0, "x1": x0 + 16, "y1": y0 + 16, "role": "match", "score": 1.0, "similarity": 0.5})
    got = purity_coverage(clus, objs)
    pd.testing.assert_frame_equal(got, loop_purity_coverage(clus, objs), check_dtype=False)
    assert got["pure_members"].sum() > 0 and got["coverage"].iloc[-1] > 0.3


def test_an_empty_clusters_table_gives_an_empty_curve():
    curve = purity_coverage(clusters().iloc[:0], objects())
    assert curve.empty and list(curve.columns) == CURVE_COLUMNS


def test_each_split_is_scored_on_its_own_images_and_objects():
    manifest = pd.DataFrame({"image_id": ["a", "b"], "split": ["unlabeled", "unlabeled"], "sha256": ["0" * 64] * 2})
    why = evaluation_split(manifest, objects(), {"a", "b"}, "test").skipped
    assert "none of the 2 images is in split 'test'" in why
    manifest["split"] = "test"
    assert "no non-difficult object boxes" in evaluation_split(manifest, objects().iloc[:0], {"a", "b"}, "test").skipped
    test = evaluation_split(manifest, objects(), {"a"}, "test")
    assert test.skipped is None and test.images == {"a"} and len(test.objects) == 2
    assert test.describe() == "test: 1 images, 2 non-difficult objects"
    # val is derived from trainval by content hash
    val_hash, train_hash = "0" * 64, "f" * 64
    assert in_val(val_hash) and not in_val(train_hash)
    manifest = pd.DataFrame({"image_id": ["a", "b"], "split": "trainval", "sha256": [val_hash, train_hash]})
    val = evaluation_split(manifest, objects(), {"a", "b"}, "val")
    assert val.images == {"a"} and set(val.objects["image_id"]) == {"a"}
    _, numbers = val.score(clusters(), 0.25)
    # only a's members and a's two objects count: cluster 1 keeps (50, 20) on a's cat and (145, 145) on nothing
    assert numbers["purity_at_25pct_coverage"] == 0.5 and numbers["max_coverage"] == 1.0
