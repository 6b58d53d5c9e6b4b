"""When a Dagster run may write dvc.lock, and how a stage's lock entry is fingerprinted."""

import hashlib
import json
import shutil

import yaml

from ctx_core.config import load_params
from ctx_core.dvc_sync import commit_stage, lock_fingerprints, params_differences
from tests.conftest import ROOT


def _project(tmp_path, dvc=True):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    if dvc:
        (tmp_path / ".dvc").mkdir()
    return tmp_path / "params.yaml"


def test_only_result_changing_overrides_count(tmp_path):
    params = _project(tmp_path)
    assert params_differences(load_params(params)) == []
    same = load_params(params, ["pretrain.lr=0.002", "pretrain.device=cpu", "tracking.uri=http://x", "data.ingest.workers=2"])
    assert params_differences(same) == []  # same value, a device, the tracking store, a process count
    changed = load_params(params, ["pretrain.steps=50", "discovery.top_k=5"])
    assert params_differences(changed) == ["discovery.top_k", "pretrain.steps"]


def test_commit_is_skipped_with_a_reason(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    record = commit_stage(load_params(_project(tmp_path / "a", dvc=False)), "synth")
    assert not record.committed and "not a DVC project" in record.reason
    params = _project(tmp_path / "b")
    record = commit_stage(load_params(params, ["pretrain.steps=50"]), "pretrain")
    assert not record.committed and "differ from params.yaml (pretrain.steps)" in record.reason
    other = tmp_path / "b" / "params.smoke.yaml"
    other.write_text("extends: params.yaml\n")
    record = commit_stage(load_params(other), "synth")
    assert not record.committed and "DVC reads params.yaml" in record.reason


def test_lock_fingerprint_is_the_hash_of_the_sorted_outputs(tmp_path):
    lock = {"schema": "2.0", "stages": {
        "synth": {"cmd": "ctx synth", "outs": [
            {"path": "reports/m.json", "md5": "bbb"}, {"path": "data/synth", "md5": "aaa.dir"}]},
        "finetune@scratch": {"cmd": "ctx finetune --init scratch", "outs": [{"path": "models/d", "md5": "ccc.dir"}]},
    }}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    got = lock_fingerprints(tmp_path)
    expected = hashlib.sha256(json.dumps([["data/synth", "aaa.dir"], ["reports/m.json", "bbb"]]).encode()).hexdigest()[:16]
    assert got["synth"] == expected and set(got) == {"synth", "finetune@scratch"}
    assert lock_fingerprints(tmp_path / "nowhere") == {}
