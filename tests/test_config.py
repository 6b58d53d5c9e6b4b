import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ctx_core.config import ConfigError, Params, load_params, parse_override
from tests.conftest import ROOT


def test_repo_params_validate_and_defaults_match_model():
    settings = load_params(ROOT / "params.yaml")
    assert settings.params.pretrain.patch_size == 32
    assert settings.root == ROOT
    # every section the design names is present in the file
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert set(raw) == set(Params.model_fields) == {
        "data", "pretrain", "features", "discovery", "detection", "probe", "compare", "tracking", "storage"
    }


def test_smoke_profile_extends_and_overrides():
    smoke = load_params(ROOT / "params.smoke.yaml")
    assert smoke.params.data.synth.images == 40
    assert smoke.params.pretrain.chroma == "projection"  # inherited from params.yaml


def test_settings_are_frozen():
    settings = load_params(ROOT / "params.yaml")
    with pytest.raises(Exception):
        settings.params.pretrain.lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "override, fragments",
    [
        ("pretrain.lr=-1", ["pretrain.lr", "-1", "greater than 0"]),
        ("pretrain.lrr=0.1", ["unknown key pretrain.lrr", "allowed keys here", "lr,"]),
        ("data.synth.images=many", ["data.synth.images", "'many'", "valid integer"]),
        ("pretrain.chroma=rgb", ["pretrain.chroma", "'rgb'", "'projection'", "'color_dropping'"]),
        ("data.synth.splits.test=0.9", ["data.synth.splits", "sum to 1"]),
        ("nosuchsection.x=1", ["unknown key nosuchsection", "pretrain"]),
        ("pretrain.pixelation_min_side=40", ["pixelation_min_side (40)", "pixelation_max_side (31)"]),
    ],
)
def test_bad_values_give_one_line_naming_key_value_and_allowed(override, fragments):
    with pytest.raises(ConfigError) as info:
        load_params(ROOT / "params.yaml", [override])
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_override_values_are_yaml_scalars():
    assert parse_override("pretrain.amp=false") == (["pretrain", "amp"], False)
    assert parse_override("features.scales=[1.0, 0.5]") == (["features", "scales"], [1.0, 0.5])
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("lr=0.1")


def test_relative_paths_resolve_against_params_folder(tmp_path: Path):
    path = tmp_path / "p.yaml"
    path.write_text("data:\n  synth:\n    out: somewhere\n")
    settings = load_params(path)
    assert settings.path(settings.params.data.synth.out) == tmp_path / "somewhere"


def test_missing_params_file_and_bad_yaml(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
    cyc = tmp_path / "cyc.yaml"
    cyc.write_text("extends: cyc.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_params(cyc)


def test_cli_prints_one_line_and_exits_2_without_traceback(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "ctx_core.cli", "synth", "--params", str(ROOT / "params.yaml"),
         "--set", "pretrain.optimizer=lbfgs", "--out", str(tmp_path / "x")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ctx: error: ")
    assert "pretrain.optimizer" in lines[0] and "'lbfgs'" in lines[0] and "'sgd'" in lines[0]
    assert not (tmp_path / "x").exists()
