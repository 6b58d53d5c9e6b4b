"""dvc.yaml's code deps cannot drift from the imports: they are generated from the stage
table, and the check names the stage and the file when one is missing."""

import copy

import yaml

from ctx_core.stage_deps import closure, code_deps, covered, main, problems, write
from ctx_core.stages import BY_NAME, STAGES
from tests.conftest import ROOT


def _dvc() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())


def test_dvc_yaml_is_current():
    assert problems(_dvc()) == [], "run `python -m ctx_core.stage_deps --write`"


def test_a_removed_dep_is_named_with_its_stage():
    dvc = copy.deepcopy(_dvc())
    deps = dvc["stages"]["discover"]["deps"]
    deps.remove("ctx_core/knn.py")  # best_per_group: the dep the hand-kept list missed
    assert problems(dvc) == ["dvc.yaml stage 'discover': its code ctx_core/knn.py is not in deps"]
    finetune = dvc["stages"]["finetune"]["do"]
    finetune["deps"].remove("ctx_core/config.py")
    assert "dvc.yaml stage 'finetune': its code ctx_core/config.py is not in deps" in problems(dvc)


def test_params_and_command_are_checked_against_the_table():
    dvc = copy.deepcopy(_dvc())
    dvc["stages"]["extract"]["params"].append("pretrain.patch_rms")
    dvc["stages"]["compare"]["cmd"] = "ctx model-comparison"
    found = problems(dvc)
    assert any("'extract': params" in p and "pretrain.patch_rms" in p for p in found)
    assert any("'compare': cmd 'ctx model-comparison' must run `ctx compare`" in p for p in found)


def test_closure_follows_imports_inside_functions():
    # ctx_core.cli.extract imports the stage code inside its command functions
    mods = closure(["ctx_core.cli.extract"])
    assert {"ctx_core.features.run", "ctx_core.features.query", "ctx_core.encoder.artifact", "ctx_core.config"} <= mods
    assert not any(m.startswith(("ctx_core.pretext", "ctx_core.detection", "ctx_core.cli.pretrain")) for m in mods)


def test_every_stage_depends_on_config_and_its_cli_module():
    for s in STAGES:
        deps = code_deps(s)
        assert covered("ctx_core/config.py", deps), s.name
        assert covered(s.cli.replace(".", "/") + ".py", deps), s.name
    assert covered("ctx_core/knn.py", code_deps(BY_NAME["discover"]))
    assert covered("ctx_core/registry.py", code_deps(BY_NAME["compare"]))
    assert covered("ctx_core/tracking.py", code_deps(BY_NAME["compare"]))


def test_covered():
    assert covered("ctx_core/pretext/data.py", ["ctx_core/pretext"])
    assert not covered("ctx_core/pretext_more.py", ["ctx_core/pretext"])
    assert covered("ctx_core/knn.py", ["ctx_core/knn.py"])


def test_write_restores_a_stale_file_and_keeps_comments(tmp_path, capsys):
    stale = (ROOT / "dvc.yaml").read_text().replace("      - ctx_core/knn.py\n", "", 1)
    path = tmp_path / "dvc.yaml"
    path.write_text(stale)
    assert main(["--check", "--file", str(path)]) == 1
    assert "ctx_core/knn.py is not in deps" in capsys.readouterr().err
    assert write(path) >= 1
    assert main(["--check", "--file", str(path)]) == 0
    assert path.read_text() == (ROOT / "dvc.yaml").read_text()
