"""An MLflow server that does not answer is reported at once, before any work."""

import socket
import time

import pytest

from ctx_core.config import load_params
from ctx_core.errors import UserError
from ctx_core.tracking import check_reachable, stage_run
from tests.conftest import write_params


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket closes


def test_unreachable_server_fails_fast_naming_it(tmp_path):
    uri = f"http://127.0.0.1:{closed_port()}"
    settings = load_params(write_params(tmp_path, tracking={"enabled": True, "uri": uri}))
    start = time.monotonic()
    with pytest.raises(UserError, match=f"MLflow tracking server {uri} is unreachable.*tracking.enabled: false"):
        with stage_run(settings, "synth"):
            raise AssertionError("the stage must not start")
    assert time.monotonic() - start < 10  # MLflow's own client would retry for minutes


def test_local_stores_are_not_probed(tmp_path):
    check_reachable(f"sqlite:///{tmp_path / 'x.db'}")
    check_reachable(str(tmp_path / "mlruns"))
