"""A tiny synthetic VOC root, its ingest store and a tiny encoder, shared by the detection tests."""

import pytest

from ctx_core.config import load_params
from ctx_core.encoder.artifact import EncoderContract, save_encoder
from ctx_core.models.towers import build_tower
from ctx_core.synth.run import run_synth
from tests.conftest import write_params


@pytest.fixture(scope="session")
def voc_root(tmp_path_factory):
    """40 synthetic images (28 unlabeled, 6 trainval, 6 test) in the VOC layout."""
    tmp = tmp_path_factory.mktemp("detvoc")
    params = write_params(tmp / "p", data={"synth": {"out": str(tmp / "voc"), "reports": str(tmp / "r"), "images": 40}})
    run_synth(load_params(params), progress=False)
    return tmp / "voc"


@pytest.fixture(scope="session")
def encoder_file(tmp_path_factory):
    """A freshly initialised compact encoder (32-px patches) saved as ctx pretrain would."""
    path = tmp_path_factory.mktemp("enc") / "encoder.pt"
    tower = build_tower("compact", 32)
    return save_encoder(path, tower, EncoderContract.of(tower, "projection", 50.0))


def detection_params(tmp_path, voc_root, encoder_file, **detection):
    """Params in ``tmp_path`` fine-tuning on ``voc_root`` with the smoke budget."""
    cfg = {"input": str(voc_root), "encoder": str(encoder_file), "out": str(tmp_path / "models"),
           "reports": str(tmp_path / "reports"), "train_split": "trainval", "val_split": None, **detection}
    return write_params(tmp_path / "p", detection=cfg)
