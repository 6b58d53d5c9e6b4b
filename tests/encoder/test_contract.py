"""Consumers take preprocessing from the encoder, not from today's params: an encoder trained
with patch_rms 30 (and grayscale) is used with 30 by extraction and by fine-tuning while
params.yaml says pretrain.patch_rms 50 (and projection)."""

import pytest

import ctx_core.detection.run as detection_run
import ctx_core.encoder.preprocess as preprocess
from ctx_core.config import load_params
from ctx_core.encoder.artifact import EncoderContract, save_encoder
from ctx_core.features.run import run_extract
from ctx_core.feature_store import LEARNED, FeatureSet
from ctx_core.models.towers import build_tower
from tests.conftest import write_params


@pytest.fixture
def encoder_rms30(tmp_path):
    tower = build_tower("compact", 32)
    return save_encoder(tmp_path / "enc30.pt", tower, EncoderContract.of(tower, "grayscale", 30.0))


def _params(tmp_path, **sections):
    settings = load_params(write_params(tmp_path / "p", pretrain={"patch_rms": 50.0, "chroma": "projection"}, **sections))
    assert settings.params.pretrain.patch_rms == 50.0
    return settings


def test_extraction_uses_the_encoders_patch_rms(tmp_path, store, encoder_rms30, monkeypatch):
    seen = []
    real = preprocess.normalise
    monkeypatch.setattr(preprocess, "normalise", lambda x, rms: seen.append(rms) or real(x, rms))
    settings = _params(tmp_path, features={
        "input": str(store), "encoder": str(encoder_rms30), "out": str(tmp_path / "f"), "reports": str(tmp_path / "r"),
        "scales": [0.5], "max_images": 4, "baselines": ["raw_pixels"]})
    run_extract(settings, progress=False)
    meta = FeatureSet.open(tmp_path / "f" / LEARNED).meta
    assert (meta["patch_rms"], meta["chroma"]) == (30.0, "grayscale")
    assert seen and set(seen) == {30.0}


def test_finetuning_uses_the_encoders_patch_rms(tmp_path, voc_root, encoder_rms30, monkeypatch):
    seen = []
    real = detection_run.absorb_input_transform
    monkeypatch.setattr(detection_run, "absorb_input_transform",
                        lambda trunk, scale, chroma: seen.append((scale, chroma)) or real(trunk, scale, chroma))
    settings = _params(tmp_path, detection={
        "input": str(voc_root), "encoder": str(encoder_rms30), "out": str(tmp_path / "m"),
        "reports": str(tmp_path / "r"), "steps": 1, "batch_size": 2})
    result = detection_run.run_finetune(settings, "context", progress=False)
    assert seen == [(30.0, "grayscale")]
    assert [r.steps for r in result.runs] == [1]
