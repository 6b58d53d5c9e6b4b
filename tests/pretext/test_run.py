"""ctx pretrain end to end: reports, MLflow run, registered encoder, bad input; ctx pairs."""

import json
import subprocess
import sys

import mlflow
import pytest
from PIL import Image

from ctx_core.config import load_params
from ctx_core.errors import UserError
from ctx_core.pretext.run import run_pretrain
from ctx_core.encoder.artifact import read_contract
from ctx_core.registry import RegistryError, load_encoder_ref
from tests.conftest import write_params

SMALL = {"steps": 6, "batch_size": 16, "warmup_steps": 1, "checkpoint_every": 3, "log_every": 2, "workers": 0,
         "eval_pairs": 32, "pairs_per_grid": 8, "held_out_fraction": 0.25}


def test_pretrain_logs_registers_and_reloads(synth_root, tmp_path):
    params = write_params(tmp_path, pretrain={**SMALL, "input": str(synth_root)}, tracking={"enabled": True})
    settings = load_params(params)
    result = run_pretrain(settings, progress=False)
    assert result.encoder.is_file() and 0 <= result.held_out_accuracy <= 1
    assert result.train_images + result.held_out_images == len(
        (synth_root / "ImageSets/Main/unlabeled.txt").read_text().split())
    for name in ("confusion", "curves", "pairs", "metrics"):
        assert result.reports[name].is_file()
    metrics = json.loads(result.reports["metrics"].read_text())
    assert metrics["steps"] == 6 and metrics["held_out_accuracy"] == result.held_out_accuracy
    # chance: the most frequent label's share of the evaluated pairs (8 random pairs of 40 per grid here)
    assert metrics["chance_accuracy"] == result.chance_accuracy >= 0.125

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = mlflow.MlflowClient(uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.data.tags["stage"] == "pretrain" and run.data.tags["data_version"].endswith(".dir")
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [2, 4, 6]
    assert run.data.params["chroma"] == "projection"
    version = client.get_model_version("ctx-encoder", result.registered_version)
    assert version.run_id == run.info.run_id
    assert version.tags["arch"] == "compact" and version.tags["chroma"] == "projection"
    assert float(version.tags["held_out_accuracy"]) == pytest.approx(result.held_out_accuracy, abs=1e-4)
    assert version.tags["data_version"] == run.data.tags["data_version"]
    import hashlib

    assert version.tags["weights_sha256"] == hashlib.sha256(result.encoder.read_bytes()).hexdigest()[:12]

    tower, contract, meta = load_encoder_ref(f"models:/ctx-encoder/{result.registered_version}", uri)
    assert tower.feature_dim == 512 and meta["registry_version"] == result.registered_version
    # the registry version carries the encoder's contract as tags, equal to the file's
    assert contract == read_contract(result.encoder)
    assert {k: version.tags[k] for k in contract.tags()} == contract.tags()
    assert contract.patch_rms == 50.0 and contract.task == "context" and contract.params_hash
    with pytest.raises(RegistryError, match="not in the registry.*registered models: ctx-encoder"):
        load_encoder_ref("models:/ctx-encoder@champion", uri)


def test_small_images_are_skipped_and_none_usable_is_an_error(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(6):
        Image.new("RGB", (200, 180), (k * 40, 90, 10)).save(folder / f"big{k}.png")
    Image.new("RGB", (100, 100)).save(folder / "small.png")
    params = write_params(tmp_path, pretrain={**SMALL, "input": str(folder), "held_out_fraction": 0.3})
    result = run_pretrain(load_params(params), progress=False)
    assert result.skipped_images == 1 and result.train_images + result.held_out_images == 6

    only_small = tmp_path / "small"
    only_small.mkdir()
    Image.new("RGB", (100, 90)).save(only_small / "a.png")
    Image.new("RGB", (120, 64)).save(only_small / "b.png")
    params = write_params(tmp_path / "p2", pretrain={**SMALL, "input": str(only_small)})
    with pytest.raises(UserError, match=r"patch grid of 132 px.*largest is 100x90 px"):
        run_pretrain(load_params(params), progress=False)


def ctx(*args):
    return subprocess.run([sys.executable, "-m", "ctx_core.cli", *args], capture_output=True, text=True)


def test_cli_resume_without_checkpoint_is_one_line(synth_root, tmp_path):
    params = write_params(tmp_path, pretrain={**SMALL, "input": str(synth_root), "out": str(tmp_path / "m")})
    proc = ctx("pretrain", "--params", str(params), "--resume")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no checkpoint" in proc.stderr


def test_ctx_pairs_prints_pairs_in_image_coordinates(synth_root, tmp_path):
    image = sorted((synth_root / "JPEGImages").glob("*.jpg"))[0]
    proc = ctx("pairs", "--image", str(image), "--n", "12", "--seed", "4", "--json", "--png", str(tmp_path / "p.png"))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    w, h = Image.open(image).size
    assert (out["width"], out["height"]) == (w, h) and len(out["pairs"]) == 12
    pitch = out["patch_size"] + out["gap"]
    offsets = {0: (-1, -1), 1: (0, -1), 2: (1, -1), 3: (-1, 0), 4: (1, 0), 5: (-1, 1), 6: (0, 1), 7: (1, 1)}
    for pair in out["pairs"]:
        f, s = pair["first"], pair["second"]
        for box in (f, s):
            assert 0 <= box[0] < box[2] <= w and 0 <= box[1] < box[3] <= h
            assert box[2] - box[0] == out["patch_size"]
        assert (round((s[0] - f[0]) / pitch), round((s[1] - f[1]) / pitch)) == offsets[pair["label"]]
    assert Image.open(tmp_path / "p.png").size[0] > 0
    again = ctx("pairs", "--image", str(image), "--n", "12", "--seed", "4", "--json")
    assert json.loads(again.stdout)["pairs"] == out["pairs"]
    bad = ctx("pairs", "--image", str(tmp_path / "nope.jpg"))
    assert bad.returncode == 2 and "cannot read it as an image" in bad.stderr
