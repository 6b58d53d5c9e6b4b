"""ctx compare: the registry table, the checks, and where the champion aliases land."""

import csv
import json
import math

import mlflow
import pytest

from ctx_core.compare import run_compare
from ctx_core.config import load_params
from ctx_core.errors import UserError
from ctx_core.fsutil import dvc_dir_hash
from ctx_core.registry import register_version
from tests.conftest import write_params

CLASSES = ["car", "dog"]


@pytest.fixture
def registry(tmp_path):
    """A SQLite registry with two encoders and five detector versions of known quality."""
    store = tmp_path / "store"
    store.mkdir()
    (store / "manifest.txt").write_text("one image\n")
    current = dvc_dir_hash(store)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    params = write_params(tmp_path, detection={"input": str(store)}, tracking={"enabled": True, "uri": uri})
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("ctx-pipeline", artifact_location=(tmp_path / "art").as_uri())

    def encoder(accuracy, weights, tagged):
        run = client.create_run(exp)
        client.log_param(run.info.run_id, "eval_pairs", 2048)
        path = tmp_path / f"w{weights}" / "encoder.pt"
        path.parent.mkdir()
        path.write_bytes(bytes([weights]) * 64)
        client.log_artifact(run.info.run_id, str(path), "encoder")
        client.set_terminated(run.info.run_id)
        import hashlib

        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        tags = {"held_out_accuracy": accuracy, **({"weights_sha256": digest} if tagged else {})}
        return register_version(client, "ctx-encoder", run.info.run_id, "encoder", tags), f"file:{digest}"

    # found by its weights_sha256 tag (as ctx pretrain registers), or by downloading and hashing (older versions)
    good, good_file = encoder(0.39, 1, tagged=True)    # well above chance
    bad, bad_file = encoder(0.13, 2, tagged=False)     # chance level

    def detector(init, enc, aps, data=current, status="FINISHED"):
        run = client.create_run(exp)
        rid = run.info.run_id
        mean = sum(aps) / len(aps) if aps else float("nan")
        client.log_metric(rid, "mAP", mean)
        for c, ap in zip(CLASSES, aps):
            client.log_metric(rid, f"AP_{c}", ap)
        client.set_terminated(rid, status=status)
        if "ctx-detector" not in [m.name for m in client.search_registered_models()]:
            client.create_registered_model("ctx-detector")
        return register_version(client, "ctx-detector", rid, "detector",
                                {"init": init, "encoder_version": enc, "data_version": data, "mAP": mean}).version

    versions = {
        "scratch": detector("scratch", "none", [0.10, 0.20]),                   # 0.15, eligible
        "context": detector("context", good_file, [0.30, 0.40]),                # 0.35, eligible: the champion
        "bad_encoder": detector("context", bad_file, [0.50, 0.50]),             # 0.50, encoder at chance
        "old_data": detector("context", "ctx-encoder/1", [0.60, 0.60], data="0" * 32 + ".dir"),
        "failed": detector("context_rescaled", good_file, [0.70, 0.70], status="FAILED"),
        "diverged": detector("context_rescaled", good_file, [float("nan"), 0.2]),
    }
    return load_params(params), client, versions, good


def test_champion_is_the_best_version_that_passed_its_checks(registry):
    settings, client, v, good = registry
    result = run_compare(settings)
    assert result.champion.version == int(v["context"]) and result.alias_moved
    assert client.get_model_version_by_alias("ctx-detector", "champion").version == v["context"]
    # its encoder, found by the weights file's digest, becomes the encoder champion
    assert result.encoder_champion == f"ctx-encoder/{good.version}"
    assert client.get_model_version_by_alias("ctx-encoder", "champion").version == good.version
    problems = {r.version: r.problem for r in result.rows}
    assert problems[int(v["scratch"])] is None and problems[int(v["context"])] is None
    assert "not above chance" in problems[int(v["bad_encoder"])]
    assert "scored on data 000000000000" in problems[int(v["old_data"])]
    assert "FAILED" in problems[int(v["failed"])]
    assert "not a finite number" in problems[int(v["diverged"])]
    # rows sorted by mAP, NaN last, with the run's per-class AP
    maps = [r.mean_ap for r in result.rows]
    finite = [m for m in maps if math.isfinite(m)]
    assert finite == sorted(finite, reverse=True) and math.isnan(maps[-1])
    champ = next(r for r in result.rows if r.version == int(v["context"]))
    assert champ.ap == pytest.approx({"car": 0.30, "dog": 0.40}) and champ.mean_ap == pytest.approx(0.35)


def test_table_files_and_second_run_keeps_the_alias(registry):
    settings, client, v, _ = registry
    first = run_compare(settings)
    rows = list(csv.DictReader(first.csv.open()))
    assert [int(r["version"]) for r in rows] == [r.version for r in first.rows]
    champ_rows = [r for r in rows if r["champion"] == "True"]
    assert len(champ_rows) == 1 and champ_rows[0]["AP_car"] == "0.3000" and champ_rows[0]["init"] == "context"
    md = first.markdown.read_text()
    assert f"| {v['context']} ★ | context |" in md and "| 35.0 | 30.0 | 40.0 | passed |" in md
    assert first.chart.stat().st_size > 1000
    again = run_compare(settings)
    assert again.champion.version == first.champion.version and not again.alias_moved
    assert again.previous_champion == first.champion.version
    # the comparison is logged as a run of its own
    run = client.get_run(again.mlflow_run_id)
    assert run.data.tags["stage"] == "compare" and run.data.tags["champion_version"] == str(v["context"])
    assert run.data.metrics["eligible_versions"] == 2


def test_no_alias_leaves_the_registry_alone(registry):
    settings, client, _, _ = registry
    result = run_compare(settings, move_alias=False)
    assert result.champion is not None and not result.alias_moved
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version_by_alias("ctx-detector", "champion")


def test_cli_prints_the_table_and_json(registry, capsys):
    from ctx_core.cli import main

    settings, _, v, _ = registry
    assert main(["compare", "--params", str(settings.source)]) == 0
    out = capsys.readouterr().out
    assert "ctx-detector@champion moved to version" in out and "| version | init |" in out
    assert main(["compare", "--params", str(settings.source), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["champion"] == int(v["context"]) and not data["alias_moved"]


def test_without_registered_detectors_the_error_says_what_to_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    settings = load_params(write_params(tmp_path, tracking={"enabled": True, "uri": uri}))
    with pytest.raises(UserError, match="no detector is registered as 'ctx-detector'.*ctx finetune"):
        run_compare(settings)
    with pytest.raises(UserError, match="tracking.enabled: true"):
        run_compare(load_params(write_params(tmp_path / "off")))
