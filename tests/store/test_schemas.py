"""pandera schemas of the store tables: failures name the table, the column and the rows."""

import pandas as pd
import pytest

from ctx_core.errors import UserError
from ctx_core.ingest import run as ingest_run
from ctx_core.ingest.run import run_ingest
from ctx_core.store.schemas import SchemaValidationError, validate_tables
from tests.ingest.conftest import ingest_settings
from tests.ingest.test_voc import make_voc2007


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("schemas")
    make_voc2007(tmp / "src")
    store = run_ingest(ingest_settings(tmp, tmp / "src"), progress=False).store
    classes = (store / "classes.txt").read_text().split()
    return pd.read_parquet(store / "manifest.parquet"), pd.read_parquet(store / "annotations.parquet"), classes


def test_written_tables_pass(tables):
    validate_tables(*tables)


@pytest.mark.parametrize(
    "table, change, message",
    [
        ("manifest", lambda m: m.assign(width=m["width"].where(m.index != 2, 0)),
         "manifest.parquet: column 'width' fails greater_than_or_equal_to(1) at rows 2 (000003)"),
        ("manifest", lambda m: m.assign(split=m["split"].where(m.index != 4, "train")),
         "manifest.parquet: column 'split' fails isin(['unlabeled', 'trainval', 'test']) at rows 4 (000005)"),
        ("manifest", lambda m: m.assign(image_id=m["image_id"].where(m.index != 1, "000001")),
         "manifest.parquet: column 'image_id' fails field_uniqueness at rows 0 (000001), 1 (000001)"),
        ("manifest", lambda m: m.assign(sha256=m["sha256"].str.upper()),
         "manifest.parquet: column 'sha256' fails str_matches('^[0-9a-f]{64}$') at rows 0 (000001), 1 (000002), "
         "2 (000003), 3 (000004), 4 (000005) and 1 more"),
        ("manifest", lambda m: m.drop(columns="sha256"), "manifest.parquet: column 'sha256' is missing"),
        ("manifest", lambda m: m.assign(width=m["orig_width"] + 1),
         "manifest.parquet: rows fail 'width <= orig_width and height <= orig_height' at rows 0 (000001)"),
        ("annotations", lambda a: a.assign(xmax=a["xmax"].astype(float)),
         "annotations.parquet: column 'xmax' fails dtype('int64') (found 'float64')"),
        ("annotations", lambda a: a.assign(xmin=a["xmax"] + 1),
         "annotations.parquet: rows fail 'xmin <= xmax and ymin <= ymax' at rows 0 (000001)"),
        ("annotations", lambda a: a.assign(xmax=a["xmax"] + 500),
         "annotations.parquet: columns 'xmax'/'ymax' exceed the stored image size at rows 0 (000001)"),
        ("annotations", lambda a: a.assign(image_id="999999"),
         "annotations.parquet: column 'image_id' names images missing from manifest.parquet at rows 0 (999999)"),
        ("annotations", lambda a: a.assign(**{"class": "zebra"}),
         "annotations.parquet: column 'class' has names missing from classes.txt at rows 0 (000001)"),
    ],
)
def test_broken_tables_fail_with_one_line(tables, table, change, message):
    manifest, annotations, classes = tables
    if table == "manifest":
        manifest = change(manifest)
    else:
        annotations = change(annotations)
    with pytest.raises(SchemaValidationError) as info:
        validate_tables(manifest, annotations, classes)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
    assert isinstance(info.value, UserError)


def test_a_schema_failure_stops_the_stage_and_leaves_no_store(tmp_path, monkeypatch):
    make_voc2007(tmp_path / "src")
    real = ingest_run._frame
    monkeypatch.setattr(ingest_run, "_frame",
                        lambda rows, cols: real(rows, cols).assign(split="bogus") if "split" in cols else real(rows, cols))
    settings = ingest_settings(tmp_path, tmp_path / "src")
    with pytest.raises(SchemaValidationError, match="column 'split'"):
        run_ingest(settings, progress=False)
    assert not (tmp_path / "store-p").exists()
