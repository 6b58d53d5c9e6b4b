"""Shared fixtures: small params files in temporary folders, and the project root."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
os.environ.pop("MLFLOW_TRACKING_URI", None)


def write_params(folder: Path, **sections) -> Path:
    """A params file in ``folder`` extending the repo's smoke profile, with ``sections`` merged in."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {"extends": str(ROOT / "params.smoke.yaml"), "tracking": {"enabled": False}}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def params_file(tmp_path: Path) -> Path:
    return write_params(tmp_path)


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """The files a `dvc repro` needs, in a fresh git + DVC repository."""
    dest = tmp_path / "repo"
    dest.mkdir()
    for name in ("ctx_core", "dvc.yaml", "params.yaml", "params.smoke.yaml", ".dvcignore"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A 40-image synthetic VOC root shared by the tests that train."""
    from ctx_core.config import load_params
    from ctx_core.synth.run import run_synth

    tmp = tmp_path_factory.mktemp("synth")
    params = write_params(tmp / "p", data={"synth": {"out": str(tmp / "voc"), "reports": str(tmp / "r"), "images": 40}})
    run_synth(load_params(params), progress=False)
    return tmp / "voc"


def dagster_resources(**overrides) -> dict:
    """The code location's resources with their defaults, some replaced by ``overrides``."""
    from dagster_project.defs.resources import ComputeDevice, DvcLock, MlflowTracking, ObjectStorage

    return {"mlflow": MlflowTracking(), "storage": ObjectStorage(), "compute": ComputeDevice(), "dvc": DvcLock(),
            **overrides}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, what: str, timeout: float = 90) -> None:
    """Wait until ``url`` answers, or fail naming ``what`` when ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not answer {url} within {timeout:.0f} s") from None
            time.sleep(0.3)
