"""Purity and coverage of discovered clusters against VOC boxes.

Definitions (the paper plots purity against coverage; it leaves "lies on" open):

- A member *lies on* an object when the centre of its box lies inside a
  non-difficult ground-truth box (VOC 1-based inclusive ``xmin..xmax`` covers
  the continuous interval ``[xmin - 1, xmax]``). A member may lie on several
  overlapping objects; it then carries each of their classes.
- A cluster's *majority class* is the class most of its members lie on (ties:
  the alphabetically first); members lying on nothing count against purity.
- Clusters are added in rank order. After the first ``n``: *purity* is the
  share of all their members lying on an object of their own cluster's
  majority class; *coverage* is the share of non-difficult object instances
  that at least one of their members lies on.
- The *area* under the curve is ``sum purity_n * (coverage_n - coverage_(n-1))``
  with coverage starting at 0: 1 would be perfectly pure clusters covering every object.

Only images of the labelled splits (``trainval``, ``test``) are evaluated:
unlabelled images have no boxes, so their members are left out, and their
objects are not counted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

LABELLED_SPLITS = ("trainval", "test")
CURVE_COLUMNS = ["rank", "cluster_id", "majority_class", "members", "pure_members", "cluster_purity", "purity", "coverage"]


def member_hits(members: pd.DataFrame, objects: pd.DataFrame) -> pd.DataFrame:
    """(member, instance, class) for every member (row position in ``members``)
    whose box centre lies inside an object box of ``objects`` (row position = instance)."""
    m = pd.DataFrame({"member": np.arange(len(members)), "image_id": members["image_id"].to_numpy(),
                      "cx": (members["x0"].to_numpy() + members["x1"].to_numpy()) / 2,
                      "cy": (members["y0"].to_numpy() + members["y1"].to_numpy()) / 2})
    o = objects.reset_index(drop=True).assign(instance=lambda d: np.arange(len(d)))
    j = m.merge(o, on="image_id")
    inside = (j["xmin"] - 1 <= j["cx"]) & (j["cx"] <= j["xmax"]) & (j["ymin"] - 1 <= j["cy"]) & (j["cy"] <= j["ymax"])
    return j.loc[inside, ["member", "instance", "class"]].reset_index(drop=True)


def purity_coverage(clusters: pd.DataFrame, objects: pd.DataFrame) -> pd.DataFrame:
    """The curve, one row per cluster in rank order.

    ``clusters``: the clusters table restricted to evaluated images;
    ``objects``: the non-difficult annotations of those images (must be non-empty).
    Columns: rank, cluster_id, majority_class, members, pure_members,
    cluster_purity, purity (cumulative), coverage (cumulative).
    """
    members = clusters.sort_values(["rank", "role"], kind="stable").reset_index(drop=True)
    hits = member_hits(members, objects)
    hits["cluster_id"] = members["cluster_id"].to_numpy()[hits["member"].to_numpy()]
    touched: set[int] = set()
    total = pure_total = 0
    rows = []
    for (rank, cid), group in members.groupby(["rank", "cluster_id"], sort=True):
        h = hits[hits["cluster_id"] == cid]
        per_class = h.drop_duplicates(["member", "class"])["class"].value_counts()
        majority = min(per_class[per_class == per_class.max()].index) if len(per_class) else None
        pure = int(h.loc[h["class"] == majority, "member"].nunique()) if majority else 0
        total += len(group)
        pure_total += pure
        touched.update(h["instance"].tolist())
        rows.append({"rank": rank, "cluster_id": cid, "majority_class": majority or "", "members": len(group),
                     "pure_members": pure, "cluster_purity": pure / len(group), "purity": pure_total / total,
                     "coverage": len(touched) / len(objects)})
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def curve_area(curve: pd.DataFrame) -> float:
    """Area under purity over coverage (rectangle rule from coverage 0)."""
    cov = np.concatenate([[0.0], curve["coverage"].to_numpy()])
    return float((curve["purity"].to_numpy() * np.diff(cov)).sum())


def purity_at(curve: pd.DataFrame, coverage: float) -> float | None:
    """Purity when coverage first reaches ``coverage``; None if it never does."""
    reached = curve[curve["coverage"] >= coverage]
    return None if reached.empty else float(reached["purity"].iloc[0])


def evaluation_objects(manifest: pd.DataFrame, annotations: pd.DataFrame, image_ids: set[str]) -> tuple[set[str], pd.DataFrame, str | None]:
    """Evaluated images (labelled and in ``image_ids``), their non-difficult
    objects, and why evaluation is skipped (None when it runs)."""
    labelled = set(manifest.loc[manifest["split"].isin(LABELLED_SPLITS), "image_id"]) & image_ids
    if not labelled:
        return labelled, annotations.iloc[:0], (
            f"none of the {len(image_ids)} images is in a labelled split {list(LABELLED_SPLITS)}, so there are no boxes to score against")
    objects = annotations[annotations["image_id"].isin(labelled) & ~annotations["difficult"]]
    if objects.empty:
        return labelled, objects, (
            f"the {len(labelled)} labelled images have no non-difficult object boxes in annotations.parquet")
    return labelled, objects.reset_index(drop=True), None
