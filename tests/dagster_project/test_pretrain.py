"""The pretrain asset trains through run_pretrain; its blocking check compares with chance."""

import json

import dagster as dg

from dagster_project.defs.pretrain import pretrain, pretrain_beats_chance
from dagster_project.defs.resources import MlflowTracking
from tests.conftest import dagster_resources, write_params

SMALL = {"steps": 4, "batch_size": 16, "warmup_steps": 1, "checkpoint_every": 2, "log_every": 2, "workers": 0,
         "eval_pairs": 32, "pairs_per_grid": 8, "held_out_fraction": 0.25}


def test_pretrain_materialises_with_metadata_and_check(synth_root, tmp_path, monkeypatch):
    params = write_params(tmp_path, pretrain={**SMALL, "input": str(synth_root)}, tracking={"enabled": True})
    monkeypatch.setenv("CTX_PARAMS", str(params))
    result = dg.materialize(
        [pretrain, pretrain_beats_chance],
        run_config={"ops": {"pretrain": {"config": {"steps": 4, "batch_size": 16}}}},
        resources=dagster_resources(mlflow=MlflowTracking()),
        raise_on_error=False,
    )
    meta = result.asset_materializations_for_node("pretrain")[0].metadata
    assert (tmp_path / "models/context/encoder.pt").is_file()
    assert meta["steps"].value == 4 and meta["registered_version"].value == "1"
    assert "data:image/png;base64," in meta["confusion"].value
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "pretrain_beats_chance"
    metrics = json.loads((tmp_path / "reports/pretrain/metrics.json").read_text())
    # 4 steps rarely beat chance by two standard errors: the check must follow the numbers, not pass blindly
    assert check.passed == (metrics["held_out_accuracy"] > check.metadata["threshold"].value)
    assert check.metadata["threshold"].value > 0.125


def test_check_without_a_materialisation_fails_saying_so():
    result = dg.materialize([pretrain, pretrain_beats_chance], selection=dg.AssetSelection.checks(pretrain_beats_chance),
                            resources=dagster_resources(), raise_on_error=False)
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and "no materialisation of pretrain" in check.metadata["error"].value


def test_pretrain_asset_is_in_the_gpu_pool_with_kubernetes_gpu_tags():
    spec = pretrain.specs_by_key[dg.AssetKey("pretrain")]
    assert pretrain.op.pool == "gpu"
    assert pretrain.op.tags["dagster-k8s/config"]
    assert {d.asset_key for d in spec.deps} == {dg.AssetKey("ingest")}
    fields = pretrain.op.config_schema.config_type.fields
    # empty means "as the params file says"; the description names the key it sets
    assert fields["steps"].default_value is None and fields["chroma"].default_value is None
    assert "`pretrain.steps`" in fields["steps"].description
    assert fields["resume"].default_value is False
