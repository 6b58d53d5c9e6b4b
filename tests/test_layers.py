"""The layering of DESIGN.md, enforced by import-linter's contracts in pyproject.toml:
front doors -> stages -> contracts, no stage imports another, ctx_core never imports Dagster."""

import shutil
import subprocess

from tests.conftest import BIN, ROOT


def _lint(root) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "lint-imports"), "--no-cache"], cwd=root, capture_output=True, text=True,
                          env={"PYTHONPATH": str(root), "PATH": str(BIN)})


def test_contracts_are_kept():
    proc = _lint(ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "Contracts: 2 kept, 0 broken." in proc.stdout


def test_a_stage_importing_another_stage_breaks_the_contract(tmp_path):
    for name in ("ctx_core", "dagster_project"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / "ctx_core" / "discovery" / "run.py", "a") as f:
        f.write("\nfrom ctx_core.features.run import run_extract  # noqa\n")
    proc = _lint(tmp_path)
    assert proc.returncode != 0
    assert "BROKEN" in proc.stdout and "ctx_core.discovery.run -> ctx_core.features.run" in proc.stdout
