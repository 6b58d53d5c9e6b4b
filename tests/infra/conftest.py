"""Helpers for the infra tests: secret scanning of config files, and the servers
of the production-like test (PostgreSQL from the OS packages, an S3-compatible
server, an MLflow server), each on 127.0.0.1, a free port and a temporary folder,
stopped by pid at the end."""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BIN, ROOT, free_port, wait_http

SECRET_NAME = re.compile(r"pass(word)?|secret|access_key|token|credential", re.IGNORECASE)
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?][^}]*)?\}")


def secret_like_values(tree: Any, path: str = "") -> list[str]:
    """Paths of string values under secret-looking keys that are not empty and not
    taken from the environment (``${VAR}`` interpolation, or Dagster's ``{env: VAR}``).
    Keys ending in "name" name a Secret object (``postgresqlSecretName``) and are not one."""
    found = []
    if isinstance(tree, dict):
        if set(tree) == {"env"}:
            return []
        for key, value in tree.items():
            sub = f"{path}.{key}" if path else str(key)
            if isinstance(value, str) and SECRET_NAME.search(str(key)) and not str(key).lower().endswith("name"):
                if value and not INTERPOLATION.fullmatch(value.strip()):
                    found.append(sub)
            else:
                found.extend(secret_like_values(value, sub))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            found.extend(secret_like_values(value, f"{path}[{i}]"))
    return found


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


# --- PostgreSQL -----------------------------------------------------------------------------------

def pg_bindir() -> Path | None:
    """Folder of initdb/pg_ctl/postgres: PATH, then Debian's /usr/lib/postgresql/<n>/bin (newest)."""
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
                   if p.parent.parent.name.isdigit() else 0)
    return found[-1].parent if found else None


@dataclass
class Postgres:
    port: int
    user: str
    password: str
    datadir: Path

    def url(self, db: str, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{self.user}:{self.password}@127.0.0.1:{self.port}/{db}"

    def create_database(self, name: str) -> None:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                                dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()


def ensure_postgres() -> Path:
    """PostgreSQL's server binaries, installed with scripts/ensure-postgres.sh when missing (root + apt)."""
    bindir = pg_bindir()
    if bindir is None:
        if os.geteuid() != 0 and not os.environ.get("CI"):
            pytest.skip("PostgreSQL server binaries not found and not root: run scripts/ensure-postgres.sh as root")
        proc = subprocess.run(["bash", str(ROOT / "scripts" / "ensure-postgres.sh")], capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 0, f"scripts/ensure-postgres.sh failed:\n{proc.stdout}\n{proc.stderr}"
        bindir = pg_bindir()
    assert bindir is not None
    return bindir


@pytest.fixture(scope="session")
def postgres(request) -> Postgres:
    """A PostgreSQL cluster in a temporary folder on 127.0.0.1, owned by an unprivileged user
    (postgres refuses to run as root), with a superuser whose password is made per run."""
    bindir = ensure_postgres()
    run_as: dict[str, Any] = {}
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "postgres"],
                           check=True)
            pw = pwd.getpwnam("postgres")
        run_as = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    # not under pytest's tmp_path: its parents are private to root
    datadir = Path(tempfile.mkdtemp(prefix="ctx-pg-"))
    request.addfinalizer(lambda: shutil.rmtree(datadir, ignore_errors=True))
    pwfile = datadir / "pw"
    password = secrets.token_hex(16)
    pwfile.write_text(password + "\n")
    if run_as:
        os.chown(datadir, run_as["user"], run_as["group"])
        os.chown(pwfile, run_as["user"], run_as["group"])
    pgdata = datadir / "data"
    subprocess.run([str(bindir / "initdb"), "-D", str(pgdata), "-U", "ctx", "--pwfile", str(pwfile),
                    "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"],
                   cwd=datadir, check=True, capture_output=True, **run_as)
    pwfile.unlink()
    port = free_port()
    opts = f"-h 127.0.0.1 -p {port} -k {datadir} -c fsync=off -c full_page_writes=off"
    start = subprocess.run([str(bindir / "pg_ctl"), "-D", str(pgdata), "-o", opts, "-l", str(datadir / "log"),
                            "-w", "-t", "60", "start"], cwd=datadir, capture_output=True, text=True, **run_as)
    log = datadir / "log"
    assert start.returncode == 0, f"pg_ctl start: {start.stderr}\n{log.read_text() if log.exists() else ''}"
    request.addfinalizer(lambda: subprocess.run([str(bindir / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w",
                                                 "stop"], cwd=datadir, capture_output=True, **run_as))
    return Postgres(port=port, user="ctx", password=password, datadir=datadir)


# --- S3 and MLflow --------------------------------------------------------------------------------

S3_ENV = {  # dummy credentials, for the servers' and clients' processes only
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def isolated_aws_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "MLFLOW_TRACKING_URI")}
    env.update(S3_ENV)
    env["AWS_CONFIG_FILE"] = str(tmp / "no-aws-config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp / "no-aws-credentials")
    env["PATH"] = f"{BIN}:{env['PATH']}"
    return env


@pytest.fixture(scope="session")
def s3_server(request, tmp_path_factory) -> str:
    """moto's S3 server (the stand-in for MinIO) on 127.0.0.1."""
    port = free_port()
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    request.addfinalizer(lambda: stop(proc))
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/", proc, "moto_server", timeout=30)
    return url


@dataclass
class MlflowServer:
    url: str
    backend_uri: str
    bucket: str


@pytest.fixture(scope="session")
def mlflow_server(request, tmp_path_factory, postgres, s3_server) -> MlflowServer:
    """`mlflow server` on PostgreSQL with --serve-artifacts to an S3 bucket, as infra/compose.yaml runs it."""
    import boto3

    tmp = tmp_path_factory.mktemp("mlflow-server")
    bucket = "mlflow"
    boto3.client("s3", endpoint_url=s3_server, **{k.lower(): v for k, v in S3_ENV.items()
                                                  if k != "AWS_DEFAULT_REGION"},
                 region_name="us-east-1").create_bucket(Bucket=bucket)
    postgres.create_database("mlflow")
    backend = postgres.url("mlflow")
    port = free_port()
    env = isolated_aws_env(tmp)
    env["MLFLOW_S3_ENDPOINT_URL"] = s3_server
    # the backend URI holds the per-run password: pass it through the environment, not argv
    env["MLFLOW_BACKEND_STORE_URI"] = backend
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # as compose: no GenAI job workers
    log = open(tmp / "mlflow-server.log", "w")
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--serve-artifacts", "--artifacts-destination", f"s3://{bucket}/"],
        cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    request.addfinalizer(lambda: (stop(proc), log.close()))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", proc, "mlflow server", timeout=120)
    except RuntimeError:
        log.flush()
        raise RuntimeError((tmp / "mlflow-server.log").read_text()[-3000:]) from None
    return MlflowServer(url=url, backend_uri=backend, bucket=bucket)
