"""The detection assets: one partition per init, GPU pool and tags, lineage to the encoder and the store."""

import json

import dagster as dg
import yaml

from dagster_project.defs.detection import FinetuneRunConfig, detection_table, detector
from tests.conftest import ROOT


def test_detector_asset_wiring():
    spec = detector.specs_by_key[dg.AssetKey("detector")]
    assert {d.asset_key for d in spec.deps} == {dg.AssetKey("raw_images"), dg.AssetKey("context_encoder")}
    assert detector.partitions_def.get_partition_keys() == ["context", "scratch", "context_rescaled"]
    assert detector.op.pool == "gpu"
    limits = json.loads(detector.op.tags["dagster-k8s/config"])["container_config"]["resources"]["limits"]
    assert limits == {"nvidia.com/gpu": "1"}
    table_deps = {d.asset_key for d in detection_table.specs_by_key[dg.AssetKey("detection_table")].deps}
    assert table_deps == {dg.AssetKey("detector")}


def test_launchpad_defaults_and_code_location():
    fields = detector.op.config_schema.config_type.fields
    detection = yaml.safe_load((ROOT / "params.yaml").read_text())["detection"]
    assert fields["steps"].default_value == detection["steps"]
    assert fields["encoder"].default_value == detection["encoder"]
    assert FinetuneRunConfig().resume is False
    graph = dg.load_from_defs_folder(path_within_project=ROOT).resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"detector", "detection_table"} <= keys


def test_scratch_partition_materialises_with_table_and_curves(voc_root, encoder_file, tmp_path, monkeypatch):
    from dagster_project.defs.resources import MlflowTracking
    from tests.detection.conftest import detection_params

    params = detection_params(tmp_path, voc_root, encoder_file, min_size=96, max_size=128)
    monkeypatch.setenv("CTX_PARAMS", str(params))
    result = dg.materialize(
        [detector], partition_key="scratch", resources={"mlflow": MlflowTracking()},
        run_config={"ops": {"detector": {"config": {"steps": 2, "batch_size": 2}}}},
    )
    assert result.success
    meta = result.asset_materializations_for_node("detector")[0].metadata
    assert meta["init"].value == "scratch" and meta["steps"].value == 2
    assert "| scratch |" in meta["ap_table"].value and "data:image/png;base64," in meta["pr_curves"].value
    assert meta["mlflow_run_id"].value == "tracking off"
