"""Probes: each metric against a plain computation, then the stage end to end on a
tiny store (scores with intervals, reports, MLflow), and its bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys

import mlflow
import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from ctx_core.config import load_params
from ctx_core.encoder.artifact import EncoderContract, save_encoder
from ctx_core.ingest.run import run_ingest
from ctx_core.models.towers import build_tower
from ctx_core.encoder.embed import raw_pixel_embedder, tower_embedder
from ctx_core.probe.features import grid_patches, image_features, square_box
from ctx_core.probe.protocols import knn_predict, svm_voc07, weighted_average_precision
from ctx_core.store.images import read_image
from ctx_core.store.labelled import read_detection_split
from ctx_core.probe.run import run_probe
from ctx_core.store.layout import image_path, read_manifest
from ctx_core.synth.run import run_synth
from tests.conftest import write_params


def test_weighted_average_precision_matches_sklearn():
    rng = np.random.default_rng(0)
    scores, labels = rng.normal(size=50), (rng.random(50) < 0.3).astype(int)
    labels[:3] = -1  # ignored (difficult only)
    weights = rng.integers(0, 3, size=(4, 50))
    ours = weighted_average_precision(scores, labels, np.vstack([np.ones(50), weights]))
    keep = labels >= 0
    assert ours[0] == pytest.approx(average_precision_score(labels[keep], scores[keep]))
    for k, w in enumerate(weights, 1):
        assert ours[k] == pytest.approx(average_precision_score(labels[keep], scores[keep], sample_weight=w[keep]))
    assert np.isnan(weighted_average_precision(scores, np.zeros(50, int), np.ones((1, 50))))[0]


def test_knn_matches_a_plain_loop():
    rng = np.random.default_rng(1)
    train, test = rng.normal(size=(60, 5)), rng.normal(size=(9, 5))
    labels = rng.integers(0, 3, 60)
    ours = knn_predict(train, labels, test, k=7, temperature=0.07, n_classes=3, block=4)
    for q, pred in zip(test, ours):
        sim = train @ q / np.linalg.norm(train, axis=1) / np.linalg.norm(q)
        top = np.argsort(-sim)[:7]
        votes = np.zeros(3)
        for i in top:
            votes[labels[i]] += np.exp(sim[i] / 0.07)
        assert pred == votes.argmax()


def test_square_box_and_grid():
    assert square_box(np.array([11, 21, 30, 30]), 100, 80) == (10, 15, 30, 35)   # 20x10 box -> 20x20 around it
    assert square_box(np.array([1, 1, 10, 40]), 100, 30) == (0, 0, 30, 30)      # clipped to the image
    img = torch.arange(3 * 64 * 96, dtype=torch.uint8).reshape(3, 64, 96)
    patches = grid_patches(img, 32, 1.0)
    assert patches.shape == (6, 3, 32, 32)
    assert torch.equal(patches[4], img[:, 32:64, 32:64].float())


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """120 synthetic images: 48 trainval, 48 test, ingested; and a compact encoder."""
    tmp = tmp_path_factory.mktemp("probe")
    params = write_params(tmp / "p", data={
        "synth": {"out": str(tmp / "voc"), "reports": str(tmp / "r"), "images": 120,
                  "splits": {"unlabeled": 0.2, "trainval": 0.4, "test": 0.4}},
        "ingest": {"source": str(tmp / "voc"), "out": str(tmp / "store"), "reports": str(tmp / "ri"), "workers": 1},
    })
    run_synth(load_params(params), progress=False)
    run_ingest(load_params(params), progress=False)
    torch.manual_seed(3)
    tower = build_tower("compact", 32)
    encoder = save_encoder(tmp / "encoder.pt", tower, EncoderContract.of(tower, "projection", 50.0))
    return tmp, tmp / "store", encoder


def probe_settings(tmp, store, encoder, **probe):
    uri = f"sqlite:///{tmp / 'mlruns.db'}"
    params = write_params(tmp / "pp", probe={"input": str(store), "encoder": str(encoder),
                                             "reports": str(tmp / "reports"), "bootstrap": 200, **probe},
                          tracking={"enabled": True, "uri": uri, "artifacts": str(tmp / "artifacts")})
    return load_params(params), uri


def test_image_features_batched_across_images_are_each_images_own_mean(labelled):
    tmp, store, encoder = labelled
    images = read_detection_split(store, "trainval").images[:7]
    torch.manual_seed(0)
    tower = build_tower("compact", 32)
    contract = EncoderContract.of(tower, "projection", 50.0)
    embedders = [tower_embedder("t", tower, "fc6", torch.device("cpu"), False), raw_pixel_embedder(4)]
    ours = image_features(images, embedders, contract, 1.0, batch=40)  # several images per batch, split unevenly
    tower.eval()
    for k, rec in enumerate(images):
        x = contract.preprocess(grid_patches(read_image(rec.path), 32, 1.0))
        with torch.no_grad():
            plain = tower(x).mean(0).numpy()
        np.testing.assert_allclose(ours["t"][k], plain, rtol=1e-4, atol=1e-5)
    assert ours["raw_pixels"].shape == (7, 48)


def test_primal_and_dual_svms_agree():
    """The primal solver (the default) minimises the dual solver's objective: same choices, near scores."""
    rng = np.random.default_rng(2)
    x, xt = rng.normal(size=(60, 8)), rng.normal(size=(40, 8))
    w = rng.normal(size=8)
    y = {"a": (x @ w + rng.normal(0, 1, 60) > 0).astype(int)}
    yt = {"a": (xt @ w > 0).astype(int)}
    primal = svm_voc07(x, y, xt, yt, (0.1, 1.0), folds=3, seed=0)
    dual = svm_voc07(x, y, xt, yt, (0.1, 1.0), folds=3, seed=0, dual=True)
    assert primal.costs == dual.costs
    np.testing.assert_allclose(primal.scores["a"], dual.scores["a"], atol=1e-3)
    assert average_precision_score(yt["a"], primal.scores["a"]) > 0.9


def test_probe_scores_every_featuriser_with_intervals(labelled):
    tmp, store, encoder = labelled
    settings, uri = probe_settings(tmp, store, encoder)
    result = run_probe(settings, progress=False)
    assert result.skipped is None and result.test_images == 48 and result.test_crops > 48
    for protocol in ("svm_map", "knn_top1", "logreg_top1"):
        assert set(result.scores[protocol]) == {"learned", "random_init", "raw_pixels"}
        for ci in result.scores[protocol].values():
            assert 0 <= ci.low <= ci.mean <= ci.high <= 1 and ci.n == 48
        d = result.differences[protocol]["random_init"]
        a, b = result.scores[protocol]["learned"].mean, result.scores[protocol]["random_init"].mean
        assert d.mean == pytest.approx(a - b)
    # ten classes, 48 test images: crops are classified far above chance by some featuriser
    assert max(ci.mean for ci in result.scores["logreg_top1"].values()) > 0.3
    metrics = json.loads(result.reports["metrics"].read_text())
    assert metrics["svm_map_learned"] == pytest.approx(result.scores["svm_map"]["learned"].mean)
    assert metrics["svm_map_learned_minus_random_init_low"] is not None
    table = result.reports["table_md"].read_text()
    assert "| VOC07 SVM mAP (image features) |" in table and "learned − random_init" in table
    assert result.reports["chart"].stat().st_size > 0
    run = mlflow.MlflowClient(uri).get_run(result.mlflow_run_id)
    assert run.data.tags["stage"] == "probe" and run.data.tags["encoder_version"].startswith("file:")
    assert run.data.metrics["knn_top1_raw_pixels"] == pytest.approx(result.scores["knn_top1"]["raw_pixels"].mean)
    assert "learned" in result.verdict() and "random_init" in result.verdict()
    assert result.audit is not None and result.audit.images_scored == 24
    assert metrics["position_ratio_learned"] == pytest.approx(result.audit.ratios["learned"].mean)


def test_probe_without_labels_is_skipped_with_the_reason(labelled, tmp_path):
    tmp, _, encoder = labelled
    folder = tmp_path / "plain"
    folder.mkdir()
    for k, path in enumerate(sorted((tmp / "voc" / "JPEGImages").iterdir())[:5]):
        (folder / f"{k}.jpg").write_bytes(path.read_bytes())
    params = write_params(tmp_path / "p", data={"ingest": {"source": str(folder), "out": str(tmp_path / "store"),
                                                           "reports": str(tmp_path / "ri"), "workers": 1}})
    run_ingest(load_params(params), progress=False)
    settings, _ = probe_settings(tmp_path, tmp_path / "store", encoder)
    result = run_probe(settings, progress=False)
    assert result.skipped and "no labelled images" in result.skipped
    assert json.loads(result.reports["metrics"].read_text()) == {"skipped": result.skipped}


def test_a_cut_image_is_skipped_and_named_not_a_crash(labelled, tmp_path):
    import shutil

    tmp, store, encoder = labelled
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    manifest = read_manifest(copy)
    victim = image_path(copy, sorted(manifest.loc[manifest["split"] == "test", "image_id"])[0])
    victim.write_bytes(victim.read_bytes()[:200])
    settings, _ = probe_settings(tmp_path, copy, encoder, bootstrap=20, audit_patches=0, baselines=["raw_pixels"])
    result = run_probe(settings, progress=False)
    assert result.skipped is None and result.train_images + result.test_images == 95
    assert any(victim.name in n and n.startswith("skipped: ") for n in result.notes)
    assert json.loads(result.reports["metrics"].read_text())["unreadable_images"] == 1


def test_encoder_patches_larger_than_the_images_is_one_line(labelled, tmp_path):
    tmp, store, _ = labelled
    big = build_tower("compact", 256)
    encoder = save_encoder(tmp_path / "big.pt", big, EncoderContract.of(big, "projection", 50.0))
    params = write_params(tmp_path / "p", probe={"input": str(store), "encoder": str(encoder),
                                                 "reports": str(tmp_path / "r")})
    proc = subprocess.run([sys.executable, "-m", "ctx_core.cli", "probe", "--params", str(params)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "256-px patches" in proc.stderr and "192x" in proc.stderr
