"""The stage table is the one list of stages: the CLI registers from it, each stage's run
function and CLI module exist, and one name is used for CLI, DVC and Dagster."""

import inspect
import subprocess
import sys

import pytest
import yaml

from ctx_core.cli.main import build_parser
from ctx_core.stages import BY_NAME, STAGES, stage, stage_for_command
from tests.conftest import ROOT


def _subcommands(parser) -> set[str]:
    action = next(a for a in parser._actions if a.dest == "command")
    return set(action.choices)


def test_every_stage_is_a_subcommand_of_its_own_name():
    registered = _subcommands(build_parser())
    for s in STAGES:
        assert s.name in registered, s.name
        assert set(s.subcommands) <= registered
    owned = {c for s in STAGES for c in s.subcommands}
    assert registered == owned  # no subcommand outside the table


@pytest.mark.parametrize("s", STAGES, ids=lambda s: s.name)
def test_run_function_and_cli_module(s):
    fn = s.run_function()
    assert fn.__name__.startswith("run_") and "settings" in inspect.signature(fn).parameters
    # the CLI for one command registers only its own stage's subcommands
    assert _subcommands(build_parser(s.name)) == set(s.subcommands)
    assert stage_for_command(s.name) is s


def test_dvc_stages_are_the_table():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert list(dvc) == [s.name for s in STAGES]
    for s in STAGES:
        body = dvc[s.name]["do"] if s.foreach else dvc[s.name]
        assert body["cmd"].split()[:2] == ["ctx", s.name]
        assert ("foreach" in dvc[s.name]) == bool(s.foreach)


def test_lookup_by_dvc_name_and_unknown_names():
    assert stage("finetune@context") is BY_NAME["finetune"]
    assert stage("finetune").asset_path("scratch") == ["finetune", "scratch"]
    assert stage("pretrain").asset_path() == ["pretrain"] and stage("pretrain").dvc_stage() == "pretrain"
    with pytest.raises(KeyError, match="no stage 'pretext'; the stages are synth, ingest"):
        stage("pretext")
    assert stage_for_command("nope") is None


def test_running_one_stage_imports_no_other_stage():
    code = ("import sys; from ctx_core.cli.main import build_parser; build_parser('discover'); "
            "print(sorted(m for m in sys.modules if m.startswith('ctx_core.')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for other in ("ctx_core.cli.pretrain", "ctx_core.cli.finetune", "ctx_core.pretext", "ctx_core.detection"):
        assert f"'{other}" not in loaded
