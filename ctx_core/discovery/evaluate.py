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

One split is scored at a time (``evaluation_split``): ``val`` to choose the
thresholds (``tune``), ``test`` once for the reported numbers. Members on
images of other splits are left out and those images' objects not counted;
clustering itself uses every image of the feature set, labelled or not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ctx_core.store.layout import split_mask

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
    hits["rank"] = members["rank"].to_numpy()[hits["member"].to_numpy()]
    curve = members.groupby("rank", sort=True).agg(cluster_id=("cluster_id", "first"), members=("image_id", "size"))
    # majority: the class most members lie on (a member counts once per class), ties to the first name
    votes = hits.drop_duplicates(["member", "class"]).groupby(["rank", "class"]).size().rename("votes").reset_index()
    majority = (votes.sort_values(["rank", "votes", "class"], ascending=[True, False, True])
                .drop_duplicates("rank").set_index("rank")["class"])
    on_majority = hits[hits["class"].to_numpy() == majority.reindex(hits["rank"]).to_numpy()]
    curve["majority_class"] = majority.reindex(curve.index).fillna("")
    curve["pure_members"] = on_majority.groupby("rank")["member"].nunique().reindex(curve.index, fill_value=0)
    curve["cluster_purity"] = curve["pure_members"] / curve["members"]
    curve["purity"] = curve["pure_members"].cumsum() / curve["members"].cumsum()
    first_touch = hits.groupby("instance")["rank"].min().value_counts()
    curve["coverage"] = first_touch.reindex(curve.index, fill_value=0).cumsum() / len(objects)
    return curve.reset_index()[CURVE_COLUMNS].astype({"members": "int64", "pure_members": "int64"})


def curve_area(curve: pd.DataFrame) -> float:
    """Area under purity over coverage (rectangle rule from coverage 0)."""
    cov = np.concatenate([[0.0], curve["coverage"].to_numpy()])
    return float((curve["purity"].to_numpy() * np.diff(cov)).sum())


def purity_at(curve: pd.DataFrame, coverage: float) -> float | None:
    """Purity when coverage first reaches ``coverage``; None if it never does."""
    reached = curve[curve["coverage"] >= coverage]
    return None if reached.empty else float(reached["purity"].iloc[0])


def purity_key(coverage: float) -> str:
    """The metric name of purity at ``coverage`` (e.g. ``purity_at_25pct_coverage``)."""
    return f"purity_at_{round(coverage * 100)}pct_coverage"


@dataclass(frozen=True)
class Evaluation:
    """One split's images among the clustered ones and their non-difficult
    objects; ``skipped`` says why the split cannot be scored (None when it can)."""

    split: str
    images: frozenset[str]
    objects: pd.DataFrame
    skipped: str | None

    def describe(self) -> str:
        if self.skipped:
            return f"skipped: {self.skipped}"
        return f"{self.split}: {len(self.images)} images, {len(self.objects)} non-difficult objects"

    def score(self, clusters: pd.DataFrame, coverage_at: float) -> tuple[pd.DataFrame, dict[str, float | None]]:
        """The curve of ``clusters`` on this split's images and its numbers: area,
        purity at ``coverage_at`` (None: never reached), max coverage, the first scored cluster's purity."""
        curve = purity_coverage(clusters[clusters["image_id"].isin(self.images)], self.objects)
        return curve, {
            "purity_coverage_area": round(curve_area(curve), 4),
            purity_key(coverage_at): None if (p := purity_at(curve, coverage_at)) is None else round(p, 4),
            "max_coverage": round(float(curve["coverage"].max()), 4) if len(curve) else 0.0,
            "top_cluster_purity": round(float(curve["cluster_purity"].iloc[0]), 4) if len(curve) else None,
        }


def evaluation_split(manifest: pd.DataFrame, annotations: pd.DataFrame, image_ids: set[str], split: str) -> Evaluation:
    """The images of ``split`` among ``image_ids`` and their non-difficult objects.

    ``manifest``: columns ``image_id``, ``split`` and, for ``train``/``val`` derived
    from ``trainval``, ``sha256`` (``layout.split_mask``)."""
    images = frozenset(set(manifest.loc[split_mask(manifest, [split]), "image_id"]) & image_ids)
    if not images:
        return Evaluation(split, images, annotations.iloc[:0], (
            f"none of the {len(image_ids)} images is in split {split!r}, so there are no boxes to score against"))
    objects = annotations[annotations["image_id"].isin(images) & ~annotations["difficult"]]
    if objects.empty:
        return Evaluation(split, images, objects, (
            f"the {len(images)} images of split {split!r} have no non-difficult object boxes in annotations.parquet"))
    return Evaluation(split, images, objects.reset_index(drop=True), None)
