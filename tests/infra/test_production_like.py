"""Production-like run on one machine without a container engine: what
infra/compose.yaml starts, as plain processes. PostgreSQL from the OS packages,
moto's S3 server standing in for MinIO, `mlflow server` on PostgreSQL with
--serve-artifacts to an S3 bucket, Dagster's instance from infra/dagster.yaml on
PostgreSQL; then the smoke pipeline through `dvc repro` against them, and its
outputs pushed to an S3 DVC remote and pulled back.

The stages run without S3 credentials: MLflow artifacts go through the server
(the compose stack's setup), which alone writes to the bucket."""

import hashlib
import shutil
import subprocess
import uuid
from pathlib import Path

import boto3
import mlflow
import psycopg2
import pytest
import yaml

from ctx_core.config import load_params
from tests.conftest import ROOT
from tests.infra.conftest import S3_ENV, isolated_aws_env

pytestmark = pytest.mark.slow


def sh(cwd: Path, env: dict, *cmd: str, timeout: int = 300) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def s3_client(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"])


def tree_digest(root: Path) -> dict[str, str]:
    if root.is_file():
        return {root.name: hashlib.sha256(root.read_bytes()).hexdigest()}
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_dagster_instance_of_infra_loads_on_postgres(postgres, tmp_path, monkeypatch):
    from dagster import DagsterInstance, DagsterRun

    postgres.create_database("dagster")
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "infra" / "dagster.yaml", home / "dagster.yaml")
    for key, value in {"DAGSTER_HOME": str(home), "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(postgres.port),
                       "DAGSTER_PG_DB": "dagster", "DAGSTER_PG_USER": postgres.user,
                       "DAGSTER_PG_PASSWORD": postgres.password}.items():
        monkeypatch.setenv(key, value)
    with DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert type(instance.run_launcher).__name__ == "DefaultRunLauncher"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        config = instance.get_concurrency_config()
        assert config.pool_config.default_pool_limit == 1
        assert config.run_queue_config.max_concurrent_runs == 4
        instance.add_run(DagsterRun(job_name="infra_check", run_id=str(uuid.uuid4())))
    conn = psycopg2.connect(host="127.0.0.1", port=postgres.port, user=postgres.user, password=postgres.password,
                            dbname="dagster")
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pipeline_name FROM runs")
        assert cur.fetchall() == [("infra_check",)]
    conn.close()


def test_smoke_pipeline_on_postgres_mlflow_and_s3(project_copy, postgres, s3_server, mlflow_server, tmp_path):
    repo = project_copy
    # dvc reads params.yaml itself: the smoke profile written flat, smaller still
    params = load_params(ROOT / "params.smoke.yaml").params.model_dump(mode="json")
    params["data"]["synth"]["images"] = 30
    params["pretrain"].update(steps=4, diagnostic_steps=0, eval_pairs=32, batch_size=16, warmup_steps=1,
                              checkpoint_every=4, log_every=1)
    params["tracking"].update(enabled=True, uri=None, experiment="ctx-infra")
    (repo / "params.yaml").write_text(yaml.safe_dump(params))

    base = isolated_aws_env(tmp_path)
    base["DVC_NO_ANALYTICS"] = "1"
    stages = {k: v for k, v in base.items() if k not in S3_ENV}  # no S3 credentials for the stages
    stages["MLFLOW_TRACKING_URI"] = mlflow_server.url
    sh(repo, base, "git", "init", "-q")
    sh(repo, base, "dvc", "init", "-q")
    sh(repo, stages, "dvc", "repro", "pretrain", timeout=600)

    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    store_out = params["data"]["ingest"]["out"]
    data_version = {o["path"]: o["md5"] for o in lock["stages"]["ingest"]["outs"]}[store_out]

    # the registry is the server's, on PostgreSQL
    client = mlflow.MlflowClient(mlflow_server.url)
    (version,) = client.search_model_versions("name='ctx-encoder'")
    assert version.tags["data_version"] == data_version
    run = client.get_run(version.run_id)
    assert run.data.tags["stage"] == "pretrain" and run.data.tags["data_version"] == data_version
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")  # proxied by the server
    stages_logged = {r.data.tags["stage"] for r in client.search_runs(
        [client.get_experiment_by_name("ctx-infra").experiment_id])}
    assert stages_logged == {"synth", "ingest", "pretrain"}
    conn = psycopg2.connect(mlflow_server.backend_uri.replace("+psycopg2", ""))
    with conn, conn.cursor() as cur:
        cur.execute("SELECT name, version FROM model_versions")
        assert cur.fetchall() == [("ctx-encoder", int(version.version))]
        cur.execute("SELECT count(*) FROM runs")
        assert cur.fetchone() == (3,)
    conn.close()

    # ... and its artifacts are objects in the bucket, byte for byte the stage's encoder
    encoder = repo / params["pretrain"]["out"] / "encoder.pt"
    s3 = s3_client(s3_server)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=mlflow_server.bucket)["Contents"]]
    (key,) = [k for k in keys if k.endswith(f"{version.run_id}/artifacts/encoder/encoder.pt")]
    assert s3.get_object(Bucket=mlflow_server.bucket, Key=key)["Body"].read() == encoder.read_bytes()
    assert version.source.startswith("mlflow-artifacts:/")
    downloaded = mlflow.artifacts.download_artifacts(artifact_uri=f"{version.source}/encoder.pt",
                                                     dst_path=str(tmp_path / "dl"), tracking_uri=mlflow_server.url)
    assert Path(downloaded).read_bytes() == encoder.read_bytes()

    # DVC: push to the S3 remote, lose cache and outputs, pull back the same bytes
    s3.create_bucket(Bucket="dvc")
    sh(repo, base, "dvc", "remote", "add", "-d", "store", "s3://dvc/store")
    sh(repo, base, "dvc", "remote", "modify", "store", "endpointurl", s3_server)
    config = (repo / ".dvc" / "config").read_text()
    assert "testing" not in config and "secret" not in config  # credentials stay in the environment
    outs = [repo / params["data"]["synth"]["out"], repo / store_out, encoder]
    before = {str(p): tree_digest(p) for p in outs}
    sh(repo, base, "dvc", "push", "--with-deps", "pretrain")
    assert s3.list_objects_v2(Bucket="dvc", Prefix="store/")["KeyCount"] > 0
    shutil.rmtree(repo / ".dvc" / "cache")
    for p in outs:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    sh(repo, base, "dvc", "pull", "--with-deps", "pretrain")
    assert {str(p): tree_digest(p) for p in outs} == before
    assert "up to date" in sh(repo, base, "dvc", "status", "pretrain")
