"""The context_encoder asset trains through run_pretrain; its blocking check compares with chance."""

import json

import dagster as dg
import yaml

from dagster_project.defs.context_encoder import context_encoder, context_encoder_beats_chance
from dagster_project.defs.resources import MlflowTracking
from tests.conftest import dagster_resources, ROOT, write_params

SMALL = {"steps": 4, "batch_size": 16, "warmup_steps": 1, "checkpoint_every": 2, "log_every": 2, "workers": 0,
         "eval_pairs": 32, "pairs_per_grid": 8, "held_out_fraction": 0.25}


def test_context_encoder_materialises_with_metadata_and_check(synth_root, tmp_path, monkeypatch):
    params = write_params(tmp_path, pretrain={**SMALL, "input": str(synth_root)}, tracking={"enabled": True})
    monkeypatch.setenv("CTX_PARAMS", str(params))
    result = dg.materialize(
        [context_encoder, context_encoder_beats_chance],
        run_config={"ops": {"context_encoder": {"config": {"steps": 4, "batch_size": 16}}}},
        resources=dagster_resources(mlflow=MlflowTracking()),
        raise_on_error=False,
    )
    meta = result.asset_materializations_for_node("context_encoder")[0].metadata
    assert (tmp_path / "models/context/encoder.pt").is_file()
    assert meta["steps"].value == 4 and meta["registered_version"].value == "1"
    assert "data:image/png;base64," in meta["confusion"].value
    (check,) = result.get_asset_check_evaluations()
    metrics = json.loads((tmp_path / "reports/pretrain/metrics.json").read_text())
    # 4 steps rarely beat chance by two standard errors: the check must follow the numbers, not pass blindly
    assert check.passed == (metrics["held_out_accuracy"] > check.metadata["threshold"].value)
    assert check.metadata["threshold"].value > 0.125


def test_encoder_asset_is_in_the_gpu_pool_with_kubernetes_gpu_tags():
    spec = context_encoder.specs_by_key[dg.AssetKey("context_encoder")]
    assert context_encoder.op.pool == "gpu"
    assert context_encoder.op.tags["dagster-k8s/config"]
    assert {d.asset_key for d in spec.deps} == {dg.AssetKey("raw_images")}
    fields = context_encoder.op.config_schema.config_type.fields
    pre = yaml.safe_load((ROOT / "params.yaml").read_text())["pretrain"]
    assert fields["steps"].default_value == pre["steps"] and fields["chroma"].default_value == pre["chroma"]
