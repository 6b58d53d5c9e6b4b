"""infra/compose.yaml: the services of the stack, their wiring, and settings and
secrets that come only from the environment (infra/env.example names every one
and holds no secret). `docker compose config` validates the file where the
compose plugin exists (or Debian's docker-compose 1.29, without the top-level
`name` it predates)."""

import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import ROOT
from tests.infra.conftest import INTERPOLATION, SECRET_NAME, secret_like_values

INFRA = ROOT / "infra"
COMPOSE_FILES = [INFRA / "compose.yaml", INFRA / "compose.gpu.yaml"]
SECRETS = {"POSTGRES_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((INFRA / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def example_env() -> dict[str, str]:
    out = {}
    for line in (INFRA / "env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def command(service: dict) -> str:
    cmd = service["command"]
    return " ".join(cmd) if isinstance(cmd, list) else cmd


def test_services(compose):
    services = compose["services"]
    assert {"postgres", "minio", "create-buckets", "mlflow", "dagster-webserver", "dagster-daemon",
            "dagster-code-server"} <= set(services)
    # buckets are made once MinIO answers, and MLflow waits for them and for PostgreSQL
    assert services["create-buckets"]["depends_on"]["minio"]["condition"] == "service_healthy"
    made = command(services["create-buckets"])
    assert "mc mb --ignore-existing" in made and "$$MLFLOW_BUCKET" in made and "$$DVC_BUCKET" in made
    deps = services["mlflow"]["depends_on"]
    assert deps["create-buckets"]["condition"] == "service_completed_successfully"
    assert deps["postgres"]["condition"] == "service_healthy"
    # PostgreSQL: Dagster's database by the image, MLflow's by the init script
    assert any("create-databases.sh:/docker-entrypoint-initdb.d/" in v for v in services["postgres"]["volumes"])
    assert "$MLFLOW_DB" in (INFRA / "postgres" / "create-databases.sh").read_text()


def test_mlflow_serves_artifacts_from_s3_with_a_postgresql_backend(compose):
    mlflow = compose["services"]["mlflow"]
    args = mlflow["command"]
    assert args[:2] == ["mlflow", "server"] and "--serve-artifacts" in args
    assert "--artifacts-destination=s3://${MLFLOW_BUCKET:-mlflow}/" in args
    env = mlflow["environment"]
    assert re.fullmatch(r"postgresql\+psycopg2://\$\{POSTGRES_USER\}:\$\{POSTGRES_PASSWORD\}@postgres:5432/\$\{MLFLOW_DB[^}]*\}",
                        env["MLFLOW_BACKEND_STORE_URI"])
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    # Dagster's containers call it by its service name, which MLflow's host check must allow
    assert "mlflow:5000" in next(a for a in args if a.startswith("--allowed-hosts="))


def test_dagster_webserver_daemon_and_code_server(compose):
    services = compose["services"]
    code = services["dagster-code-server"]
    workspace = yaml.safe_load((INFRA / "workspace.yaml").read_text())
    (grpc,) = [entry["grpc_server"] for entry in workspace["load_from"]]
    assert grpc["host"] == "dagster-code-server"
    cmd = code["command"]
    assert cmd[:3] == ["dagster", "code-server", "start"]
    assert cmd[cmd.index("-m") + 1] == "dagster_project.definitions"
    assert cmd[cmd.index("-p") + 1] == str(grpc["port"])
    assert code["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert services["dagster-webserver"]["command"][0] == "dagster-webserver"
    assert services["dagster-daemon"]["command"][:2] == ["dagster-daemon", "run"]
    # every Dagster process has infra/dagster.yaml and the PostgreSQL settings it reads
    instance_vars = set(re.findall(r"env: (\w+)", (INFRA / "dagster.yaml").read_text()))
    assert instance_vars == {"DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_DB", "DAGSTER_PG_USER",
                             "DAGSTER_PG_PASSWORD"}
    for name in ("dagster-webserver", "dagster-daemon", "dagster-code-server"):
        service = services[name]
        assert instance_vars <= set(service["environment"]), name
        assert "./dagster.yaml:/opt/dagster/home/dagster.yaml:ro" in service["volumes"], name
        assert service["environment"]["DAGSTER_HOME"] == "/opt/dagster/home"
        assert service["image"] == "${CTX_IMAGE:-ctx-pipeline:cpu}"
        assert service["build"]["dockerfile"] == "infra/docker/Dockerfile"


def test_settings_come_from_the_env_file_which_holds_no_secret(example_env):
    used = set()
    for path in COMPOSE_FILES:
        used |= set(INTERPOLATION.findall(path.read_text()))
    assert used - set(example_env) == set(), "variables the compose files use but env.example does not name"
    assert set(example_env) - used == set(), "variables env.example names but no compose file uses"
    assert SECRETS <= used
    for key, value in example_env.items():
        if key in SECRETS or SECRET_NAME.search(key):
            assert value == "", f"{key} must be empty in env.example (a placeholder, not a secret)"
    # no secret can be left out: each one has no default and stops compose with its name
    text = (INFRA / "compose.yaml").read_text()
    for key in SECRETS:
        assert re.search(r"\$\{" + key + r":\?[^}]+\}", text), key
        assert not re.search(r"\$\{" + key + r":?-", text), f"{key} has a default"


def test_no_literal_secret_in_infra_files(compose):
    assert secret_like_values(compose) == []
    for service in compose["services"].values():
        env = service.get("environment", {})
        for key, value in (env.items() if isinstance(env, dict) else []):
            if SECRET_NAME.search(key) or "://" in str(value) and "@" in str(value):
                assert "${" in str(value), f"{key} is a literal"
    assert secret_like_values(yaml.safe_load((INFRA / "dagster.yaml").read_text())) == []
    gitignore = (INFRA / ".gitignore").read_text().split()
    assert ".env" in gitignore


def _compose_cli() -> tuple[list[str], bool] | None:
    """The compose CLI and whether it predates the top-level `name` key (docker-compose 1.x, Debian's)."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"], False
    if shutil.which("docker-compose"):
        out = subprocess.run(["docker-compose", "version", "--short"], capture_output=True, text=True).stdout
        return ["docker-compose"], out.strip().startswith("1.")
    return None


def test_docker_compose_config_validates(tmp_path, example_env):
    found = _compose_cli()
    if found is None:
        why = "the docker client has no compose plugin" if shutil.which("docker") else "docker is not installed"
        pytest.skip(f"`docker compose config` not run: {why}; the file is checked structurally above")
    cli, old = found
    infra = shutil.copytree(INFRA, tmp_path / "repo" / "infra")  # relative paths resolve as in the checkout
    main, gpu = infra / "compose.yaml", infra / "compose.gpu.yaml"
    if old:  # docker-compose 1.29 validates the compose spec of its time, before the top-level `name`
        main.write_text("".join(line for line in main.read_text().splitlines(keepends=True)
                                if not line.startswith("name:")))
    env_file = tmp_path / ".env"
    filled = {k: (f"dummy-{k.lower()}" if k in SECRETS else v) for k, v in example_env.items()}
    env_file.write_text("".join(f"{k}={v}\n" for k, v in filled.items()))
    for files in ([main], [main, gpu]):
        args = [a for f in files for a in ("-f", str(f))]
        proc = subprocess.run([*cli, *args, "--env-file", str(env_file), "config", "--quiet"],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    # and a missing secret stops it, naming the variable
    env_file.write_text("".join(f"{k}={v}\n" for k, v in example_env.items()))
    proc = subprocess.run([*cli, "-f", str(main), "--env-file", str(env_file), "config", "--quiet"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "POSTGRES_PASSWORD" in proc.stdout + proc.stderr
