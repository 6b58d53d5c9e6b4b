"""The helpers around every asset: launchpad fields that are set become overrides,
and a DVC stage name finds its asset through the stage table."""

import dagster as dg

from ctx_core.config import load_params
from dagster_project.defs.discovery import ExtractRunConfig, Layer
from dagster_project.defs.ingest import IngestRunConfig
from dagster_project.defs.pretrain import Chroma, PretrainRunConfig, Task
from dagster_project.stage import asset_for_stage, launchpad, stage_settings
from tests.conftest import ROOT


def test_a_field_set_to_the_params_files_value_is_passed_and_an_empty_field_adds_nothing(monkeypatch):
    monkeypatch.setenv("CTX_PARAMS", str(ROOT / "params.yaml"))
    steps = load_params(ROOT / "params.yaml").params.pretrain.steps
    assert launchpad(PretrainRunConfig(steps=steps)) == [f"pretrain.steps={steps}"]
    assert launchpad(PretrainRunConfig()) == []
    assert launchpad(PretrainRunConfig(resume=True)) == []  # a run option, not a params key
    assert launchpad(PretrainRunConfig(overrides=["pretrain.seed=3"])) == ["pretrain.seed=3"]
    # the pretext task is a dropdown of the four tasks, empty by default
    assert PretrainRunConfig().task is None
    assert sorted(Task.__members__) == ["context", "instance", "jigsaw", "rotation"]
    assert stage_settings(launchpad(PretrainRunConfig(task=Task.rotation))).params.pretrain.task == "rotation"
    assert stage_settings(launchpad(PretrainRunConfig(steps=steps))).params.pretrain.steps == steps


def test_launchpad_values_reach_the_settings_with_their_types(monkeypatch):
    monkeypatch.setenv("CTX_PARAMS", str(ROOT / "params.yaml"))
    overrides = [*launchpad(PretrainRunConfig(chroma=Chroma.grayscale, lr=1e-5)),
                 *launchpad(IngestRunConfig(source="2024")), *launchpad(ExtractRunConfig(layer=Layer.pool5))]
    assert overrides == ["pretrain.lr=1.0e-05", "pretrain.chroma=grayscale", "data.ingest.source='2024'",
                         "features.layer=pool5"]
    params = stage_settings(overrides).params
    assert (params.pretrain.chroma, params.pretrain.lr) == ("grayscale", 1e-5)
    assert params.data.ingest.source == "2024"  # a folder named like a number stays a string
    assert params.features.layer == "pool5"


def test_a_dvc_stage_finds_its_asset():
    assert asset_for_stage("pretrain") == dg.AssetKey("pretrain")
    assert asset_for_stage("finetune@context") == dg.AssetKey(["finetune", "context"])
    assert asset_for_stage("detection_table") == dg.AssetKey("detection_table")
    assert asset_for_stage("unknown") is None
    assert asset_for_stage("finetune") is None  # a foreach stage is one asset per item
