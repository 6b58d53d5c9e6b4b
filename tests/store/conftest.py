"""A synthetic VOC root with a large trainval share (so its derived val split has several
images) and the store ingested from it, shared by the split and leakage tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctx_core.config import load_params
from ctx_core.ingest.run import run_ingest
from ctx_core.synth.run import run_synth
from tests.conftest import write_params


@pytest.fixture(scope="session")
def split_voc_and_store(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("splits")
    params = write_params(tmp / "p", data={
        "synth": {"out": str(tmp / "voc"), "reports": str(tmp / "r"), "images": 40, "workers": 1,
                  "splits": {"unlabeled": 0.3, "trainval": 0.5, "test": 0.2}},
        "ingest": {"source": str(tmp / "voc"), "out": str(tmp / "store"), "reports": str(tmp / "ri"), "workers": 1},
    })
    run_synth(load_params(params), progress=False)
    run_ingest(load_params(params), progress=False)
    return tmp / "voc", tmp / "store"
