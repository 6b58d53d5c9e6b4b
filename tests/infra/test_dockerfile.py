"""infra/docker/Dockerfile: pinned like the project (Python 3.11, requirements.lock,
torch/torchvision as pyproject.toml), a CUDA base by default and a CPU variant.
No image is built here (no container engine on CI machines)."""

import re
import tomllib

import pytest

from tests.conftest import ROOT

DOCKERFILE = ROOT / "infra" / "docker" / "Dockerfile"


@pytest.fixture(scope="module")
def text() -> str:
    return DOCKERFILE.read_text()


def arg(text: str, name: str) -> str:
    (value,) = re.findall(rf"^ARG {name}=(\S+)$", text, re.MULTILINE)
    return value


def pins(lines) -> dict[str, str]:
    return dict(re.fullmatch(r"([A-Za-z0-9_.\[\]-]+)==(\S+)", line.split(";")[0].strip()).groups()
                for line in lines if "==" in line and not line.lstrip().startswith("#"))


def test_torch_pins_match_pyproject_and_the_lock(text):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = pins(project["dependencies"])
    locked = pins((ROOT / "requirements.lock").read_text().splitlines())
    for pkg, argname in (("torch", "TORCH_VERSION"), ("torchvision", "TORCHVISION_VERSION")):
        assert arg(text, argname) == declared[pkg] == locked[pkg], pkg
    # Python: the minor version pyproject allows, the patch level the lock was made with
    assert re.fullmatch(r"3\.11\.\d+", arg(text, "PYTHON_VERSION"))
    assert project["requires-python"] == ">=3.11,<3.12"


def test_installs_the_lock_then_the_project_without_dependencies(text):
    assert "COPY requirements.lock ./" in text
    assert "uv pip install -r requirements.lock" in text  # the GPU image: the lock as it is
    # the CPU image: the lock without CUDA packages, torch/torchvision +cpu at the same versions
    assert "grep -v -E '^(nvidia-|cuda-|triton==|torch==|torchvision==)' requirements.lock" in text
    assert '"torch==${TORCH_VERSION}+cpu" "torchvision==${TORCHVISION_VERSION}+cpu"' in text
    assert "uv pip install --no-deps -e ." in text
    locked = pins((ROOT / "requirements.lock").read_text().splitlines())
    for pkg in ("dagster-postgres", "dagster-k8s", "psycopg2-binary", "dagster-webserver", "mlflow", "dvc-s3"):
        assert pkg in locked, f"{pkg}: the images need it and install only the lock"
    cuda_only = [p for p in locked if re.match(r"(nvidia-|cuda-|triton$)", p)]
    assert cuda_only, "the CPU variant's filter should remove something"


def test_bases_and_entrypoint(text):
    assert arg(text, "BASE_IMAGE").startswith("nvidia/cuda:13.")  # the lock's torch is a CUDA 13 build
    assert "nvidia-cuda-runtime==13." in (ROOT / "requirements.lock").read_text()
    assert re.search(r"^ARG VARIANT=gpu$", text, re.MULTILINE)
    for line in re.findall(r"^FROM (\S+)", text, re.MULTILINE) + [arg(text, "UV_IMAGE")]:
        assert not line.endswith(":latest")
    assert re.search(r"^USER ctx$", text, re.MULTILINE)  # not root at run time
    assert 'CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "dagster_project.definitions"]' in text
    # what the COPY lines need is not ignored by the build context's ignore file
    ignore = (ROOT / "infra" / "docker" / "Dockerfile.dockerignore").read_text()
    for path in re.findall(r"^COPY (?!--)(.+) \S+$", text, re.MULTILINE):
        for name in path.split():
            assert f"!{name}" in ignore or f"!{name}/**" in ignore, name
