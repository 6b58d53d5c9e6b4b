"""encoder.pt: weights plus the contract, loaded with weights_only; the errors name the file."""

import json

import pytest
import torch

from ctx_core.encoder.artifact import (
    EncoderContract, EncoderContractError, EncoderFileError, load_encoder, read_contract, save_encoder,
)
from ctx_core.encoder.preprocess import normalise, project_colour
from ctx_core.models.towers import build_tower


def test_roundtrip_keeps_weights_and_contract(tmp_path):
    tower = build_tower("compact", 32).eval()
    contract = EncoderContract.of(tower, "grayscale", 30.0, data_version="abc.dir", params_hash="f00")
    path = save_encoder(tmp_path / "enc" / "encoder.pt", tower, contract, {"steps": 7})
    blob = torch.load(path, weights_only=True)  # a plain dict: no pickled objects
    assert blob["format"] == "ctx-encoder/2" and blob["contract"]["patch_rms"] == 30.0
    loaded, got, meta = load_encoder(path)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded.eval()(x), tower(x)) and meta == {"steps": 7}
    assert got == contract == read_contract(path)
    assert got.feature_layers == {"fc6": tower.feature_dim, "pool5": tower.pool5_dim}


def test_preprocess_is_the_contracts_transform():
    contract = EncoderContract("compact", 32, "projection", 30.0, {"fc6": 8})
    x = torch.rand(3, 3, 32, 32) * 255
    want = normalise(project_colour(x), 30.0)
    assert torch.allclose(contract.preprocess(x), want)
    flat = contract.preprocess(x) - contract.preprocess(x).mean(dim=(2, 3), keepdim=True)
    assert torch.allclose(flat.pow(2).mean(dim=(1, 2, 3)).sqrt(), torch.full((3,), 30.0), rtol=1e-4)


def test_tags_are_strings_for_the_registry():
    tags = EncoderContract("compact", 32, "projection", 50.0, {"fc6": 512, "pool5": 1152}, "context", "d.dir", "h").tags()
    assert tags["patch_rms"] == "50.0" and tags["chroma"] == "projection" and tags["task"] == "context"
    assert json.loads(tags["feature_layers"]) == {"fc6": 512, "pool5": 1152}
    assert all(isinstance(v, str) for v in tags.values())


def test_a_layer_the_encoder_lacks_names_both():
    contract = EncoderContract("compact", 32, "projection", 50.0, {"fc6": 512})
    with pytest.raises(EncoderContractError, match="features.layer is 'pool5' but the encoder has feature layers fc6"):
        contract.layer_size("pool5", "features.layer")


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(EncoderFileError, match="missing.pt does not exist"):
        load_encoder(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(EncoderFileError, match="bad.pt cannot be read"):
        load_encoder(bad)
    old = tmp_path / "old.pt"
    torch.save({"format": "ctx-encoder/1", "arch": "compact", "patch_size": 32, "state_dict": {}, "meta": {}}, old)
    with pytest.raises(EncoderFileError, match="old.pt is a ctx-encoder/1 file.*run `ctx pretrain` again"):
        load_encoder(old)
    with pytest.raises(EncoderFileError, match="encoder chroma 'sepia'"):
        EncoderContract("compact", 32, "sepia", 50.0)
