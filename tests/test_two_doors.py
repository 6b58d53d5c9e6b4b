"""One pipeline, two front doors, one MLflow server: `dvc repro` and a Dagster
materialisation of the whole graph on the smoke profile, in a fresh git + DVC
repository, each seeing what the other made.

1. `dvc repro` runs every stage against a real `mlflow server` (SQLite
   backend, served artifacts); `dvc status` is clean, metrics, plots and
   `dvc exp run -S` work, and the dvc.lock sensor reports every asset to
   Dagster as materialised.
2. A params change makes stages stale; Dagster materialises the whole graph
   in process (checks included); `dvc status` is clean again, every stage's
   MLflow run carries the Dagster run id, and the registry comparison moved
   the champion alias on the server.
"""

import json
import os
import shutil
import subprocess

import dagster as dg
import mlflow
import pytest
import torch
import yaml

from ctx_core.cli.main import IMPORT_LOG
from ctx_core.config import load_params
from ctx_core.stage_deps import covered
from ctx_core.stages import STAGES, stage_for_command
from tests.conftest import BIN, ROOT, dagster_resources, free_port, wait_http

pytestmark = pytest.mark.slow

STAGES_WITH_RUNS = {"synth", "ingest", "pretrain", "extract", "discover", "probe", "finetune", "compare"}


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 with a SQLite backend and served local artifacts; stopped by pid."""
    home = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(home / "server.log", "w")
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}", "--artifacts-destination", str(home / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{uri}/health", proc, "mlflow server", timeout=120)
        yield uri
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """The project's stage code, dvc.yaml and the smoke profile (flat: DVC reads params.yaml itself)."""
    dest = tmp_path_factory.mktemp("two-doors") / "repo"
    dest.mkdir()
    for name in ("ctx_core", "dvc.yaml", ".dvcignore", ".gitignore"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    smoke = load_params(ROOT / "params.smoke.yaml").params.model_dump(mode="json")
    (dest / "params.yaml").write_text(yaml.safe_dump(smoke))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "project"]):
        sh(dest, *cmd)
    return dest


def sh(cwd, *cmd, env=None):
    full = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1", **(env or {})}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=full, timeout=900)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def assert_imports_covered_by_deps(repo, logs) -> None:
    """Every ctx_core file a stage's `ctx` run imported (``CTX_IMPORT_LOG``) is covered by that
    stage's deps in dvc.yaml; the failure names the stage and the file."""
    dvc = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    seen = set()
    for log in sorted(logs.glob("*.txt")):
        command = log.name.rsplit("-", 1)[0]
        found = stage_for_command(command)
        body = dvc[found.name]["do"] if found.foreach else dvc[found.name]
        deps = [d for d in body["deps"] if isinstance(d, str)]
        uncovered = [f for f in log.read_text().split() if not covered(f, deps)]
        assert not uncovered, f"dvc.yaml stage {found.name!r} imports {uncovered} but does not list them as deps"
        seen.add(found.name)
    assert seen == {s.name for s in STAGES}


def stage_runs(uri: str) -> list:
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("ctx-pipeline")
    return client.search_runs([exp.experiment_id], max_results=1000)


def all_assets():
    from dagster_project.defs import detection, discovery, ingest, pretrain, probe, synth

    return [
        synth.synth, ingest.ingest, ingest.ingest_tables_valid,
        pretrain.pretrain, pretrain.pretrain_beats_chance,
        discovery.extract, discovery.discover, probe.probe,
        *detection.FINETUNE_ASSETS, *detection.FINETUNE_CHECKS, detection.detection_table, detection.compare,
    ]


def test_dvc_repro_end_to_end_and_dagster_sees_every_stage(repo, mlflow_server, monkeypatch, tmp_path):
    imports = tmp_path / "imports"
    env = {"MLFLOW_TRACKING_URI": mlflow_server}
    out = sh(repo, "dvc", "repro", env={**env, IMPORT_LOG: str(imports)})
    assert_imports_covered_by_deps(repo, imports)
    assert "Running stage 'compare'" in out and "ctx-detector@champion" in out
    assert "up to date" in sh(repo, "dvc", "status", env=env)
    metrics = json.dumps(json.loads(sh(repo, "dvc", "metrics", "show", "--json", env=env)))
    assert '"held_out_accuracy"' in metrics and '"mAP"' in metrics
    sh(repo, "dvc", "plots", "show", "-o", "plots", env=env)
    assert (repo / "plots" / "index.html").stat().st_size > 1000

    # every stage logged to the server, with lineage tags; the registry has the detectors and a champion
    runs = stage_runs(mlflow_server)
    assert {r.data.tags["stage"] for r in runs} == STAGES_WITH_RUNS
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    data_version = next(o["md5"] for o in lock["ingest"]["outs"] if o["path"] == "data/raw_images-smoke")
    for r in runs:
        assert r.data.tags["git_commit"] and r.data.tags["params_hash"]
        if r.data.tags["stage"] in {"pretrain", "extract", "probe", "finetune"}:
            assert r.data.tags["data_version"] == data_version
    client = mlflow.MlflowClient(mlflow_server)
    versions = client.search_model_versions("name='ctx-detector'")
    assert len(versions) == 4 and all(client.get_run(v.run_id).data.tags["stage"] == "finetune" for v in versions)
    assert client.get_model_version_by_alias("ctx-detector", "champion")
    artifacts = {a.path for a in client.list_artifacts(versions[0].run_id, "detector")}
    assert "detector/detector.pt" in artifacts

    # the dvc.lock sensor reports each stage's outputs to Dagster, once
    from dagster_project.defs.dvc_lock import dvc_lock_sensor

    monkeypatch.setenv("CTX_PARAMS", str(repo / "params.yaml"))
    instance = dg.DagsterInstance.ephemeral()
    result = dvc_lock_sensor(dg.build_sensor_context(instance=instance))
    reported = {e.asset_key.to_user_string() for e in result.asset_events}
    assert reported == {"synth", "ingest", "pretrain", "extract", "discover", "probe",
                        "finetune/context", "finetune/scratch", "finetune/context_rescaled",
                        "finetune/scratch_rescaled", "detection_table", "compare"}
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    assert instance.get_latest_materialization_event(dg.AssetKey("pretrain")) is not None
    again = dvc_lock_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(again, dg.SkipReason)

    # a DVC experiment with a changed param runs through the same stage
    sh(repo, "dvc", "exp", "run", "-S", "discovery.top_k=4", "discover", env=env)
    shown = json.dumps(json.loads(sh(repo, "dvc", "exp", "show", "--json", env=env)))
    assert '"discovery.top_k": 4' in shown.replace('"top_k": 4', '"discovery.top_k": 4')
    assert yaml.safe_load((repo / "params.yaml").read_text())["discovery"]["top_k"] == 4

    # the pretext task is an experiment param like any other: the pretrain stage reruns with it
    sh(repo, "dvc", "exp", "run", "-S", "pretrain.task=rotation", "pretrain", env=env)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["pretrain"]["task"] == "rotation"
    encoder = torch.load(repo / params["pretrain"]["out"] / "encoder.pt", weights_only=True)
    assert encoder["contract"]["task"] == "rotation"
    sh(repo, "dvc", "exp", "run", "-S", "pretrain.task=context", "pretrain", env=env)  # as the next test expects


def test_dagster_materialises_the_whole_graph_and_dvc_status_agrees(repo, mlflow_server, monkeypatch):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["pretrain"]["seed"] = 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    assert "modified:" in sh(repo, "dvc", "status")

    monkeypatch.setenv("CTX_PARAMS", str(repo / "params.yaml"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(all_assets(), instance=instance, resources=dagster_resources())
    assert result.success
    materialised = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert len(materialised) == 12
    assert all(c.passed for c in result.get_asset_check_evaluations())
    for event in result.get_asset_materialization_events():
        meta = event.materialization.metadata
        assert meta["dvc_lock"].value.endswith("dvc.lock updated"), meta["dvc_lock"].value
        if meta["mlflow_run_id"].value != "tracking off":
            assert meta["mlflow_run"].value.startswith(mlflow_server)

    # DVC agrees: nothing to redo
    assert "up to date" in sh(repo, "dvc", "status")

    # every stage logged again, now with this Dagster run's id; the champion alias moved on the server
    tagged = [r for r in stage_runs(mlflow_server) if r.data.tags.get("dagster_run_id") == result.run_id]
    assert {r.data.tags["stage"] for r in tagged} == STAGES_WITH_RUNS
    comparison = result.asset_materializations_for_node("compare")[0].metadata
    assert comparison["versions"].value == 8 and "★" in comparison["comparison"].value
    client = mlflow.MlflowClient(mlflow_server)
    champion = client.get_model_version_by_alias("ctx-detector", "champion")
    assert int(champion.version) == comparison["champion_version"].value
    assert comparison["registry"].value == f"{mlflow_server}/#/models/ctx-detector"

    # and the dvc.lock sensor has nothing new to report: the assets recorded their own lock entries
    from dagster_project.defs.dvc_lock import dvc_lock_sensor

    assert isinstance(dvc_lock_sensor(dg.build_sensor_context(instance=instance)), dg.SkipReason)
