"""pandera schemas of the store's tables, and a validator that fails with one line.

``manifest.parquet``: one row per stored image. ``annotations.parquet``: one
row per object, VOC boxes (1-based, inclusive) in the stored image's pixels.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa

from ctx_core.errors import UserError

SPLITS = ["unlabeled", "trainval", "test"]
IMAGE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class SchemaValidationError(UserError):
    """A store table breaks its schema; the message names the table, column and rows."""


MANIFEST = pa.DataFrameSchema(
    {
        "image_id": pa.Column(str, pa.Check.str_matches(IMAGE_ID), unique=True),
        "source": pa.Column(str, pa.Check.str_length(min_value=1)),
        "sha256": pa.Column(str, pa.Check.str_matches(r"^[0-9a-f]{64}$"), unique=True),
        "orig_width": pa.Column(int, pa.Check.ge(1)),
        "orig_height": pa.Column(int, pa.Check.ge(1)),
        "width": pa.Column(int, pa.Check.ge(1)),
        "height": pa.Column(int, pa.Check.ge(1)),
        "split": pa.Column(str, pa.Check.isin(SPLITS)),
    },
    checks=[
        pa.Check(lambda df: (df["width"] <= df["orig_width"]) & (df["height"] <= df["orig_height"]),
                 name="width <= orig_width and height <= orig_height", element_wise=False),
    ],
    strict=True,
    ordered=True,
    name="manifest",
)

ANNOTATIONS = pa.DataFrameSchema(
    {
        "image_id": pa.Column(str, pa.Check.str_matches(IMAGE_ID)),
        "class": pa.Column(str, pa.Check.str_length(min_value=1)),
        "xmin": pa.Column(int, pa.Check.ge(1)),
        "ymin": pa.Column(int, pa.Check.ge(1)),
        "xmax": pa.Column(int, pa.Check.ge(1)),
        "ymax": pa.Column(int, pa.Check.ge(1)),
        "difficult": pa.Column(bool),
        "truncated": pa.Column(bool),
    },
    checks=[
        pa.Check(lambda df: (df["xmin"] <= df["xmax"]) & (df["ymin"] <= df["ymax"]),
                 name="xmin <= xmax and ymin <= ymax", element_wise=False),
    ],
    strict=True,
    ordered=True,
    name="annotations",
)


def _rows(index: list, frame: pd.DataFrame, limit: int = 5) -> str:
    shown = []
    for i in index[:limit]:
        ident = frame.at[i, "image_id"] if "image_id" in frame.columns and i in frame.index else None
        shown.append(f"{i} ({ident})" if ident is not None else str(i))
    more = f" and {len(index) - limit} more" if len(index) > limit else ""
    return ", ".join(shown) + more


_TABLE_CHECKS = {
    "column_in_dataframe": "column {names} is missing",
    "column_in_schema": "column {names} is not in the schema",
    "column_ordered": "column {names} is out of order",
}


def validate_table(schema: pa.DataFrameSchema, frame: pd.DataFrame, table: str) -> None:
    """Validate ``frame`` against ``schema``; a failure is one line naming ``table``, the column, the check and the rows."""
    frame = frame.reset_index(drop=True)  # row numbers in messages are positions in the file
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases.copy()
        # a table-wide check reports every column of a failing row; name it once
        cases["column"] = cases["column"].astype(object).where(cases["schema_context"] != "DataFrameSchema", "")
        cases["check"] = cases["check"].astype(str)
        failing = cases[["column", "check"]].drop_duplicates()
        column, check = failing.iloc[0]["column"], failing.iloc[0]["check"]
        same = cases[(cases["check"] == check) & (cases["column"] == column)]
        if check in _TABLE_CHECKS:
            names = ", ".join(repr(c) for c in same["failure_case"].astype(str).unique())
            raise SchemaValidationError(f"{table}: " + _TABLE_CHECKS[check].format(names=names)) from None
        index = sorted({int(i) for i in same["index"].dropna().tolist()})
        what = f"column {column!r} fails {check}" if column else f"rows fail '{check}'"
        where = f" at rows {_rows(index, frame)}" if index else f" (found {same.iloc[0]['failure_case']!r})"
        others = len(failing) - 1
        tail = f"; {others} more failing check{'s' * (others > 1)}" if others > 0 else ""
        raise SchemaValidationError(f"{table}: {what}{where}{tail}") from None


def validate_tables(manifest: pd.DataFrame, annotations: pd.DataFrame, classes: list[str]) -> None:
    """Both schemas, then the links between the tables: every box belongs to a
    stored image, lies inside it, and names a class in ``classes.txt``."""
    manifest, annotations = manifest.reset_index(drop=True), annotations.reset_index(drop=True)
    validate_table(MANIFEST, manifest, "manifest.parquet")
    validate_table(ANNOTATIONS, annotations, "annotations.parquet")
    sizes = manifest.set_index("image_id")[["width", "height"]]
    orphan = ~annotations["image_id"].isin(sizes.index)
    if orphan.any():
        rows = annotations.index[orphan].tolist()
        raise SchemaValidationError(
            f"annotations.parquet: column 'image_id' names images missing from manifest.parquet at rows {_rows(rows, annotations)}"
        )
    joined = annotations.join(sizes, on="image_id")
    outside = (joined["xmax"] > joined["width"]) | (joined["ymax"] > joined["height"])
    if outside.any():
        rows = annotations.index[outside].tolist()
        raise SchemaValidationError(
            f"annotations.parquet: columns 'xmax'/'ymax' exceed the stored image size at rows {_rows(rows, annotations)}"
        )
    unknown = ~annotations["class"].isin(classes)
    if unknown.any():
        rows = annotations.index[unknown].tolist()
        raise SchemaValidationError(
            f"annotations.parquet: column 'class' has names missing from classes.txt at rows {_rows(rows, annotations)}"
        )
