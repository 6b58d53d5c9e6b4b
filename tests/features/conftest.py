"""A tiny image store (40 synthetic images, ingested) and a tiny encoder file,
shared by the feature, discovery and Dagster tests.

The fixtures are imported by other folders' conftest files, which makes them
separate fixtures to pytest; each builds in a fixed folder of the session's
base temp and reuses what an earlier copy built."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ctx_core.config import Settings, load_params
from ctx_core.ingest.run import run_ingest
from ctx_core.encoder.artifact import EncoderContract, save_encoder
from ctx_core.models.towers import build_tower
from ctx_core.synth.run import run_synth
from tests.conftest import write_params


def _shared(tmp_path_factory, name: str) -> tuple[Path, bool]:
    """A session-wide folder ``name`` and whether an earlier fixture already filled it."""
    folder = tmp_path_factory.getbasetemp() / f"shared-{name}"
    done = (folder / ".done").is_file()
    folder.mkdir(exist_ok=True)
    return folder, done


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Path:
    tmp, done = _shared(tmp_path_factory, "store")
    if done:
        return tmp / "store"
    params = write_params(tmp / "p", data={
        "synth": {"out": str(tmp / "voc"), "reports": str(tmp / "r"), "images": 40},
        "ingest": {"source": str(tmp / "voc"), "out": str(tmp / "store"), "reports": str(tmp / "ri"), "workers": 1},
    })
    run_synth(load_params(params), progress=False)
    run_ingest(load_params(params), progress=False)
    (tmp / ".done").touch()
    return tmp / "store"


@pytest.fixture(scope="session")
def encoder_file(tmp_path_factory) -> Path:
    folder, done = _shared(tmp_path_factory, "encoder")
    if not done:
        torch.manual_seed(1)
        tower = build_tower("compact", 32)
        save_encoder(folder / "encoder.pt", tower, EncoderContract.of(tower, "projection", 50.0))
        (folder / ".done").touch()
    return folder / "encoder.pt"


def feature_settings(folder: Path, store: Path, encoder: Path, features: dict | None = None, **sections) -> Settings:
    """Params for extracting ``store`` with ``encoder`` into ``folder``: scale 0.5
    only (15 patches per 192x144 image) keeps a test run to a second or two."""
    feats = {"input": str(store), "encoder": str(encoder), "out": str(folder / "features"),
             "reports": str(folder / "reports"), "splits": ["unlabeled", "trainval", "test"], "scales": [0.5],
             "batch_size": 64, "images_per_chunk": 8, **(features or {})}
    disc = {"out": str(folder / "discovery"), "reports": str(folder / "reports-discovery"), **sections.pop("discovery", {})}
    return load_params(write_params(folder, features=feats, discovery=disc, **sections))


@pytest.fixture(scope="session")
def extracted(tmp_path_factory, store, encoder_file) -> Settings:
    """Settings whose features.out holds the three feature sets of the tiny store."""
    from ctx_core.features.run import run_extract

    folder, done = _shared(tmp_path_factory, "extracted")
    settings = feature_settings(folder, store, encoder_file)
    if not done:
        run_extract(settings, progress=False)
        (folder / ".done").touch()
    return settings
