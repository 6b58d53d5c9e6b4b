"""The detection assets: one per init, GPU pool and tags, lineage to the encoder and the store, finite-mAP checks."""

import json

import dagster as dg

from dagster_project.defs.detection import FINETUNE_ASSETS, FINETUNE_CHECKS, FinetuneRunConfig, compare, detection_table
from tests.conftest import ROOT, dagster_resources


def _by_init():
    return {a.key.path[-1]: a for a in FINETUNE_ASSETS}


def test_detector_assets_wiring():
    assets = _by_init()
    assert list(assets) == ["context", "scratch", "context_rescaled", "scratch_rescaled"]
    for init, asset in assets.items():
        deps = {d.asset_key for d in asset.specs_by_key[dg.AssetKey(["finetune", init])].deps}
        expected = {dg.AssetKey("ingest"), dg.AssetKey("pretrain")}  # scratch too, as in dvc.yaml
        assert deps == expected
        assert asset.op.pool == "gpu"
        limits = json.loads(asset.op.tags["dagster-k8s/config"])["container_config"]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "1"
    for table in (detection_table, compare):
        deps = {d.asset_key for d in table.specs_by_key[table.key].deps}
        assert deps == {dg.AssetKey(["finetune", i]) for i in assets}
    assert {c.check_key.name for c in FINETUNE_CHECKS for _ in [0]} == {"finite_map"}


def test_launchpad_fields_default_to_the_params_file_and_code_location():
    fields = FINETUNE_ASSETS[0].op.config_schema.config_type.fields
    assert fields["steps"].default_value is None and fields["encoder"].default_value is None
    assert "detection.steps" in fields["steps"].description
    assert FinetuneRunConfig().resume is False
    graph = dg.load_from_defs_folder(path_within_project=ROOT).resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"finetune/context", "finetune/scratch", "detection_table", "compare"} <= keys


def test_scratch_detector_materialises_with_table_curves_and_check(voc_root, encoder_file, tmp_path, monkeypatch):
    from tests.detection.conftest import detection_params

    params = detection_params(tmp_path, voc_root, encoder_file, min_size=96, max_size=128)
    monkeypatch.setenv("CTX_PARAMS", str(params))
    scratch = _by_init()["scratch"]
    check = next(c for c in FINETUNE_CHECKS if c.check_key.asset_key == scratch.key)
    result = dg.materialize(
        [scratch, check], resources=dagster_resources(),
        run_config={"ops": {"finetune__scratch": {"config": {"steps": 2, "batch_size": 2}}}},
    )
    assert result.success
    meta = result.asset_materializations_for_node("finetune__scratch")[0].metadata
    assert meta["init"].value == "scratch" and meta["steps"].value == 2
    assert "| scratch |" in meta["ap_table"].value and "data:image/png;base64," in meta["pr_curves"].value
    assert meta["mlflow_run_id"].value == "tracking off"
    assert "not a DVC project" in meta["dvc_lock"].value
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed and evaluation.metadata["mAP"].value == meta["mAP"].value


def test_a_detector_without_its_encoder_names_the_upstream_asset(voc_root, tmp_path, monkeypatch):
    from tests.detection.conftest import detection_params

    params = detection_params(tmp_path, voc_root, tmp_path / "missing" / "encoder.pt")
    monkeypatch.setenv("CTX_PARAMS", str(params))
    result = dg.materialize([_by_init()["context"]], resources=dagster_resources(), raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.event_specific_data.error.message
    assert "materialise `pretrain` first" in message and "encoder.pt" in message
