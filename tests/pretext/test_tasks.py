"""``ctx pretrain`` end to end for every pretext task on the smoke profile: the same tower, the
task in the contract, the MLflow run and the registry version, the task's own chance; an
unknown task and ``ctx pairs`` on another task are one-line errors."""

import json
import subprocess

import mlflow
import pytest

from ctx_core.config import load_params
from ctx_core.encoder.artifact import read_contract
from ctx_core.pretext.run import run_pretrain
from ctx_core.pretext.tasks import get_task
from tests.conftest import BIN, ROOT, write_params

SMALL = {"steps": 4, "batch_size": 16, "warmup_steps": 1, "checkpoint_every": 2, "log_every": 2, "workers": 0,
         "eval_pairs": 48, "pairs_per_grid": 8, "held_out_fraction": 0.25, "diagnostic_steps": 0,
         "audit_images": 0, "jigsaw_permutations": 10}


@pytest.mark.parametrize("task", ["rotation", "jigsaw", "instance"])
def test_every_task_trains_the_same_tower_and_is_tagged(task, synth_root, tmp_path):
    params = write_params(tmp_path, pretrain={**SMALL, "task": task, "input": str(synth_root)},
                          tracking={"enabled": True})
    result = run_pretrain(load_params(params), progress=False)
    contract = read_contract(result.encoder)
    assert contract.task == task and contract.arch == "compact" and contract.feature_layers["fc6"] == 512
    metrics = json.loads(result.reports["metrics"].read_text())
    cfg = load_params(params).params.pretrain
    # the same tower passes a step as context: 16 pairs of 8 per grid = 2 grids x 9 patches = 18
    assert cfg.tower_passes == 18 and metrics["tower_passes_per_second"] > 0
    chance = {"rotation": 0.25, "jigsaw": 0.1}.get(task)
    if chance:
        assert metrics["chance_accuracy"] == pytest.approx(chance, abs=0.02)
    else:  # instance: 1 / (2N - 1) over the held-out batch's other views
        assert 0 < metrics["chance_accuracy"] < 0.2
    assert result.reports["examples"].is_file() and "pairs" not in result.reports
    assert ("confusion" in result.reports) == (task == "rotation")  # 4x4; jigsaw and instance have none
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    run = client.get_run(result.mlflow_run_id)
    assert run.data.tags["task"] == task and run.data.params["task"] == task
    version = client.get_model_version("ctx-encoder", result.registered_version)
    assert version.tags["task"] == task
    per_item = {"rotation": 4, "jigsaw": 9, "instance": 2}[task]  # tower passes per crop, puzzle, image
    assert 18 - per_item < get_task(task).batch_items(cfg) * per_item <= 18


def test_an_unknown_task_and_pairs_on_another_task_are_one_line_errors(synth_root, tmp_path):
    params = write_params(tmp_path, pretrain={**SMALL, "input": str(synth_root)})
    bad = subprocess.run([str(BIN / "ctx"), "pretrain", "--params", str(params), "--set", "pretrain.task=colourise"],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1
    assert "pretrain.task" in bad.stderr and "colourise" in bad.stderr and "rotation" in bad.stderr
    image = next((synth_root / "JPEGImages").glob("*.jpg"))
    pairs = subprocess.run([str(BIN / "ctx"), "pairs", "--params", str(params), "--set", "pretrain.task=jigsaw",
                            "--image", str(image)], capture_output=True, text=True, cwd=ROOT)
    assert pairs.returncode != 0 and "pretrain.task is 'jigsaw'" in pairs.stderr
    assert len(pairs.stderr.strip().splitlines()) == 1
