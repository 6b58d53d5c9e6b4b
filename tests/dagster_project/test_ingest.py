"""The ingest asset materialises through run_ingest, and its blocking check validates the tables."""

import dagster as dg
import pandas as pd

from ctx_core.fsutil import dvc_dir_hash
from dagster_project.defs.ingest import ingest, ingest_tables_valid
from dagster_project.defs.resources import MlflowTracking
from tests.conftest import dagster_resources, write_params
from tests.ingest.conftest import SMALL_GRID, make_mixed_folder


def test_ingest_materialises_with_metadata_and_passing_check(tmp_path, monkeypatch):
    photos = make_mixed_folder(tmp_path / "photos")
    params = write_params(tmp_path, data={"ingest": {"out": "data/store", "reports": "reports/ingest"}},
                          pretrain=SMALL_GRID)
    monkeypatch.setenv("CTX_PARAMS", str(params))
    result = dg.materialize(
        [ingest, ingest_tables_valid],
        run_config={"ops": {"ingest": {"config": {"source": str(photos), "out": "data/store"}}}},
        resources=dagster_resources(mlflow=MlflowTracking()),
    )
    assert result.success
    meta = result.asset_materializations_for_node("ingest")[0].metadata
    store = tmp_path / "data" / "store"
    assert meta["data_version"].value == dvc_dir_hash(store)
    assert meta["images"].value == len(pd.read_parquet(store / "manifest.parquet")) == 11
    assert meta["quarantined_by_reason"].value["duplicate"] == 1 and meta["quarantined"].value == 8
    assert "data:image/png;base64," in meta["montage"].value
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "ingest_tables_valid"
    assert check.passed and check.metadata["images"].value == 11


def test_check_fails_on_a_broken_manifest(tmp_path, monkeypatch):
    photos = make_mixed_folder(tmp_path / "photos")
    monkeypatch.setenv("CTX_PARAMS", str(write_params(tmp_path, pretrain=SMALL_GRID)))
    instance = dg.DagsterInstance.ephemeral()
    config = {"ops": {"ingest": {"config": {"source": str(photos), "out": "store"}}}}
    assert dg.materialize([ingest], instance=instance, run_config=config,
                          resources=dagster_resources(mlflow=MlflowTracking())).success
    manifest = pd.read_parquet(tmp_path / "store" / "manifest.parquet")
    manifest.assign(split="train").to_parquet(tmp_path / "store" / "manifest.parquet", index=False)
    result = dg.materialize([ingest, ingest_tables_valid], instance=instance,
                            selection=dg.AssetSelection.checks(ingest_tables_valid),
                            resources=dagster_resources(mlflow=MlflowTracking()), raise_on_error=False)
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and "column 'split'" in check.metadata["error"].value


def test_launchpad_fields_are_empty_and_name_their_params_key():
    fields = ingest.op.config_schema.config_type.fields
    for name in ("source", "out", "max_pixels"):
        assert fields[name].default_value is None
        assert f"`data.ingest.{name}`" in fields[name].description


def test_new_images_sensor_requests_a_reingest_only_when_the_source_changes(tmp_path, monkeypatch):
    from ctx_core.config import load_params
    from ctx_core.ingest.fingerprint import source_fingerprint
    from dagster_project.defs.ingest import new_images_sensor
    from dagster_project.defs.resources import ObjectStorage

    photos = make_mixed_folder(tmp_path / "photos")
    params = write_params(tmp_path, data={"ingest": {"source": str(photos)}}, pretrain=SMALL_GRID)
    monkeypatch.setenv("CTX_PARAMS", str(params))
    instance = dg.DagsterInstance.ephemeral()

    def evaluate():
        return new_images_sensor(dg.build_sensor_context(instance=instance, resources={"storage": ObjectStorage()}))

    first = evaluate()  # never ingested: ingest
    assert isinstance(first, dg.RunRequest)
    fingerprint, _ = source_fingerprint(load_params(params))
    assert first.run_key == f"source-{fingerprint}"
    # what the ingest asset records after ingesting this source
    instance.report_runless_asset_event(dg.AssetMaterialization("ingest", metadata={"source_fingerprint": fingerprint}))
    assert isinstance(evaluate(), dg.SkipReason)
    (photos / "new.jpg").write_bytes((photos / sorted(p.name for p in photos.glob("*.jpg"))[0]).read_bytes())
    again = evaluate()
    assert isinstance(again, dg.RunRequest) and again.run_key != first.run_key
