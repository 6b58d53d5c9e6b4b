"""Fine-tuning: it learns, resumes exactly, logs one MLflow run per init with a
registered detector, writes the AP table, and refuses an encoder that does not fit."""

import json
import subprocess
import sys

import mlflow
import numpy as np
import pytest
import torch

from ctx_core.config import DetectionConfig, load_params
from ctx_core.detection.data import TrainingSet
from ctx_core.detection.io import load_detector
from ctx_core.detection.model import build_detector, he_init
from ctx_core.detection.run import load_tower, run_detection_table, run_finetune
from ctx_core.detection.train import train_detector
from ctx_core.store.labelled import read_detection_split
from ctx_core.encoder.artifact import EncoderContract, EncoderFileError, save_encoder
from ctx_core.models.towers import build_tower
from tests.conftest import write_params
from tests.detection.conftest import detection_params

TINY = DetectionConfig(min_size=96, max_size=128, scale_jitter=(1.0, 1.0), head_dim=32, rpn_proposals=64,
                       rois_per_image=32, lr=0.01, warmup_steps=2, lr_decay_at=(0.9,), log_every=1, checkpoint_every=2,
                       device="cpu")


def tiny_model(classes):
    torch.manual_seed(0)
    model = build_detector(build_tower("compact", 32), TINY, len(classes), [0.5] * 3, [0.25] * 3)
    he_init(model.backbone.trunk, seed=0)
    return model


def test_short_finetune_lowers_the_loss(voc_root, tmp_path):
    split = read_detection_split(voc_root, "trainval")
    data = TrainingSet(split.images[:2], split.classes, batch_size=2, seed=0, flip=False)
    model = tiny_model(split.classes)

    def loss_on_the_batch():  # the same images, proposals and RoI samples before and after
        torch.manual_seed(123)
        with torch.no_grad():
            return float(sum(model(*data.batch(0)).values()))

    before = loss_on_the_batch()
    result = train_detector(model, data, TINY.model_copy(update={"steps": 16}), tmp_path / "ck", {}, progress=False)
    assert len(result.history) == 16 and torch.isfinite(torch.tensor([h["loss"] for h in result.history])).all()
    assert loss_on_the_batch() < 0.85 * before


def test_resume_continues_exactly(voc_root, tmp_path):
    split = read_detection_split(voc_root, "trainval")
    data = TrainingSet(split.images, split.classes, batch_size=2, seed=0)
    cfg = TINY.model_copy(update={"steps": 4})
    whole = tiny_model(split.classes)
    train_detector(whole, data, cfg, tmp_path / "a", {"init": "x"}, progress=False)
    part = tiny_model(split.classes)
    train_detector(part, data, cfg, tmp_path / "b", {"init": "x"}, progress=False, stop_after=2)
    resumed = tiny_model(split.classes)
    result = train_detector(resumed, data, cfg, tmp_path / "b", {"init": "x"}, resume=True, progress=False)
    assert result.start_step == 2 and result.steps == 4
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    with pytest.raises(Exception, match="trained with other settings.*init: 'x' -> 'y'"):
        train_detector(tiny_model(split.classes), data, cfg.model_copy(update={"steps": 6}), tmp_path / "b",
                       {"init": "y"}, resume=True, progress=False)


def test_finetune_logs_registers_and_tabulates(voc_root, encoder_file, tmp_path):
    params = detection_params(tmp_path, voc_root, encoder_file, steps=2, min_size=96, max_size=128, seeds=[0, 1])
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    settings = load_params(params, ["tracking.enabled=true", f"tracking.uri={uri}",
                                    f"tracking.artifacts={tmp_path / 'artifacts'}"])
    summaries = {init: run_finetune(settings, init, progress=False) for init in ("context", "scratch_rescaled")}
    client = mlflow.MlflowClient(uri)
    for init, summary in summaries.items():
        assert [r.seed for r in summary.runs] == [0, 1] and summary.test.n == 2
        assert summary.test.mean == pytest.approx(np.mean([r.mean_ap for r in summary.runs]))
        for result in summary.runs:
            run = client.get_run(result.mlflow_run_id)
            assert run.data.tags["init"] == init and run.data.tags["stage"] == "finetune"
            assert run.data.tags["seed"] == str(result.seed)
            assert run.data.tags["mlflow.runName"] == f"finetune-{init}-seed{result.seed}"
            assert run.data.tags["data_version"] == result.data_version and result.data_version.endswith(".dir")
            assert run.data.metrics["mAP"] == pytest.approx(result.mean_ap)
            assert {f"AP_{c}" for c in result.ap} <= set(run.data.metrics)
            version = client.get_model_version("ctx-detector", result.registered_version)
            assert version.run_id == run.info.run_id
            assert version.tags["init"] == init and version.tags["seed"] == str(result.seed)
            assert version.tags["encoder_version"].startswith("file:") == (init == "context")
            assert version.tags["data_version"] == result.data_version
            assert float(version.tags["mAP"]) == pytest.approx(result.mean_ap, abs=1e-4)
            artifacts = {f.path for f in client.list_artifacts(run.info.run_id, "detection")}
            assert {"detection/metrics.json", "detection/pr_curves.png"} <= artifacts
            assert {f.path for f in client.list_artifacts(run.info.run_id, "detector")} == {"detector/detector.pt"}
            assert result.detector.parent.name == f"seed{result.seed}"
        written = json.loads(summary.metrics.read_text())
        assert written["per_seed"] == {"0": summary.runs[0].mean_ap, "1": summary.runs[1].mean_ap}
        assert written["n"] == 2 and written["mAP"] == pytest.approx(summary.test.mean)

    result = summaries["context"].runs[0]
    blob = torch.load(result.detector, weights_only=True)
    assert blob["classes"] == list(read_detection_split(voc_root, "trainval").classes)
    model, meta = load_detector(result.detector)
    assert meta["meta"]["init"] == "context" and meta["meta"]["seed"] == 0 and not model.training
    names = {p.name for p in result.results_dir.iterdir()}
    assert {f"comp4_det_test_{c}.txt" for c in result.ap} <= names
    metrics = json.loads(result.reports["metrics"].read_text())
    assert metrics["mAP"] == pytest.approx(result.mean_ap) and metrics["steps"] == 2 and metrics["seed"] == 0

    table = run_detection_table(settings)
    assert list(table.rows) == ["context", "scratch_rescaled"] and table.missing == ["scratch", "context_rescaled"]
    md = table.markdown.read_text().splitlines()
    assert md[2].startswith("| init | ") and md[2].endswith("| mAP [95 % CI] | n | mAP per seed |")
    assert md[4].startswith("| context | ") and len(md[4].split("|")) == len(md[2].split("|"))
    pair = ("context", "scratch_rescaled")
    diffs = [summaries["context"].per_seed[k] - summaries["scratch_rescaled"].per_seed[k] for k in (0, 1)]
    assert table.differences[pair].mean == pytest.approx(np.mean(diffs)) and table.differences[pair].n == 2
    assert table.lines[0].startswith("context − scratch_rescaled = ") and ", n=2" in table.lines[0]
    assert any(line.startswith("- context − scratch_rescaled") for line in md)
    assert table.csv.read_text().splitlines()[0] == ",".join(["init", *table.classes, "mAP", "mAP_low", "mAP_high",
                                                               "n", "seed0", "seed1"])
    summary = json.loads(table.summary.read_text())
    assert summary["context_n"] == 2 and summary["context_minus_scratch_rescaled"] == pytest.approx(np.mean(diffs))
    assert table.chart.stat().st_size > 0


def test_detection_table_intervals_and_paired_differences(tmp_path):
    """The table from hand-written per-seed results: the paired interval is computed over common seeds."""
    params = write_params(tmp_path / "p", detection={"reports": str(tmp_path / "reports"),
                                                     "inits": ["context", "scratch", "context_rescaled"]})
    settings = load_params(params)
    per_seed = {"context": {"0": 0.30, "1": 0.34, "2": 0.32}, "scratch": {"0": 0.10, "1": 0.15, "2": 0.11},
                "context_rescaled": {"0": 0.31}}
    for init, values in per_seed.items():
        folder = tmp_path / "reports" / "inits" / init
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"metric": "voc07", "per_seed": values,
                                                         "ap": {"car": float(np.mean(list(values.values())))}}))
    table = run_detection_table(settings)
    d = [0.20, 0.19, 0.21]
    half = 4.302652729911275 * np.std(d, ddof=1) / np.sqrt(3)
    ci = table.differences[("context", "scratch")]
    assert (ci.mean, ci.low, ci.high) == pytest.approx((0.20, 0.20 - half, 0.20 + half))
    assert table.lines[0] == f"context − scratch = {ci.format(100, signed=True, unit='mAP')}: beyond noise"
    assert table.intervals["context_rescaled"].n == 1 and not table.intervals["context_rescaled"].defined
    assert "no ranking claimed" in table.lines[1] and ", n=1" in table.lines[1]
    md = table.markdown.read_text()
    assert "| context_rescaled | 31.0 | 31.0 [no interval] | 1 | 0: 31.0 |" in md


def test_the_encoder_decides_the_backbone_and_bad_weights_are_refused(voc_root, tmp_path):
    resnet = build_tower("resnet18", 64)
    path = save_encoder(tmp_path / "resnet.pt", resnet, EncoderContract.of(resnet, "none", 30.0))
    params = detection_params(tmp_path, voc_root, path)
    assert load_params(params).params.pretrain.arch == "compact"
    for init in ("context", "scratch"):  # scratch: the encoder's architecture with fresh weights
        tower, contract, version = load_tower(load_params(params), init, None)
        assert (tower.arch, tower.patch_size, contract.patch_rms) == ("resnet18", 64, 30.0)
        assert (version == "none") == (init == "scratch")
    wide = build_tower("compact", 32)
    blob_path = save_encoder(tmp_path / "odd.pt", wide, EncoderContract.of(wide, "projection", 50.0))
    blob = torch.load(blob_path, weights_only=True)
    blob["state_dict"]["trunk.0.weight"] = torch.zeros(8, 3, 5, 5)
    torch.save(blob, blob_path)
    with pytest.raises(EncoderFileError, match=r"odd.pt: weights do not fit its 'compact' tower.*trunk.0.weight"):
        load_tower(load_params(params), "context", str(blob_path))


def test_cli_missing_encoder_is_one_line(voc_root, tmp_path):
    params = detection_params(tmp_path, voc_root, tmp_path / "nope.pt")
    proc = subprocess.run([sys.executable, "-m", "ctx_core.cli", "finetune", "--params", str(params), "--init", "context"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "nope.pt does not exist" in proc.stderr
