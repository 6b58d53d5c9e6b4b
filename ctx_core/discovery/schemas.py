"""pandera schema of the clusters table (``clusters.parquet``).

One row per member of a discovered cluster: the query constellation itself
(``role`` ``query``) and each verified match (``match``). ``x0..y1`` is the
box around the member's four patches, 0-based pixels, end exclusive;
``similarity`` is the weakest of its four patch correlations (1 for the query).
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa

from ctx_core.store.schemas import IMAGE_ID, validate_table

CLUSTERS = pa.DataFrameSchema(
    {
        "cluster_id": pa.Column(int, pa.Check.ge(0)),
        "rank": pa.Column(int, pa.Check.ge(1)),
        "score": pa.Column(float),
        "image_id": pa.Column(str, pa.Check.str_matches(IMAGE_ID)),
        "x0": pa.Column(int, pa.Check.ge(0)),
        "y0": pa.Column(int, pa.Check.ge(0)),
        "x1": pa.Column(int, pa.Check.ge(1)),
        "y1": pa.Column(int, pa.Check.ge(1)),
        "role": pa.Column(str, pa.Check.isin(["query", "match"])),
        "similarity": pa.Column(float, pa.Check.in_range(-1.0001, 1.0001)),
    },
    checks=[
        pa.Check(lambda df: (df["x0"] < df["x1"]) & (df["y0"] < df["y1"]), name="x0 < x1 and y0 < y1", element_wise=False),
    ],
    strict=True,
    ordered=True,
    name="clusters",
)
COLUMNS = {"cluster_id": "int64", "rank": "int64", "score": "float64", "image_id": "str", "x0": "int64", "y0": "int64",
           "x1": "int64", "y1": "int64", "role": "str", "similarity": "float64"}


def validate_clusters(frame: pd.DataFrame) -> None:
    validate_table(CLUSTERS, frame, "clusters.parquet")
