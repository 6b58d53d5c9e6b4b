import json

import pandas as pd
import pytest

from ctx_core.cli import main
from ctx_core.discovery.schemas import validate_clusters
from ctx_core.features.run import run_extract
from tests.features.conftest import feature_settings


def test_ctx_discover_writes_tables_curves_and_montage(extracted, capsys, tmp_path):
    assert main(["discover", "--params", str(extracted.source), "--json",
                 "--set", "discovery.min_members=1", "--set", "discovery.max_residual=0.5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["tables"]) == {"learned", "random_init", "raw_pixels"}
    clusters = pd.read_parquet(out["tables"]["learned"])
    validate_clusters(clusters)
    assert len(clusters) and clusters["rank"].min() == 1
    metrics = out["metrics"]
    assert metrics["evaluation"].startswith("test: ") and metrics["evaluation"].endswith("non-difficult objects")
    assert {"purity_coverage_area_test", "purity_at_25pct_coverage_test", "max_coverage_test",
            "chosen_max_residual", "chosen_min_members"} <= set(metrics["learned"])
    for name in ("learned", "random_init", "raw_pixels"):
        curve = pd.read_csv(out["reports"][f"purity_coverage_{name}"])
        # clusters with no member on a labelled image are not scored
        assert len(curve) <= metrics[name]["clusters"] and curve["coverage"].is_monotonic_increasing
    assert json.loads(open(out["reports"]["metrics"]).read())["learned"]["clusters"] == metrics["learned"]["clusters"]
    for key in ("clusters", "purity_coverage"):
        assert open(out["reports"][key], "rb").read(4) == b"\x89PNG"


def test_discovery_without_annotations_runs_and_says_why_evaluation_is_skipped(tmp_path, store, encoder_file, capsys):
    settings = feature_settings(tmp_path, store, encoder_file, {"splits": ["unlabeled"], "max_images": 12,
                                                                "baselines": []})
    run_extract(settings, progress=False)
    assert main(["discover", "--params", str(settings.source)]) == 0
    out = capsys.readouterr().out
    assert "evaluation: skipped: none of the 12 images is in split 'test'" in out
    assert "tuning: off, the params' thresholds are used (val skipped: none of the 12 images is in split 'val'" in out
    assert (tmp_path / "discovery" / "clusters.parquet").is_file()


def test_discover_needs_extracted_features(tmp_path, store, encoder_file, capsys):
    settings = feature_settings(tmp_path, store, encoder_file)
    assert main(["discover", "--params", str(settings.source)]) == 2
    assert "run `ctx extract` first" in capsys.readouterr().err


def test_discover_refuses_randomly_sampled_features(tmp_path, store, encoder_file, capsys):
    settings = feature_settings(tmp_path, store, encoder_file, {"sampling": "random", "patches_per_image": 8,
                                                                "max_images": 3, "baselines": []})
    run_extract(settings, progress=False)
    assert main(["discover", "--params", str(settings.source)]) == 2
    assert "discovery needs features.sampling = dense" in capsys.readouterr().err


@pytest.mark.parametrize("bad, message", [("discovery.max_scale_ratio=0.5", "greater than or equal to 1"),
                                          ("features.scales=[0]", "scales must lie in (0, 4]")])
def test_bad_settings_are_one_line_errors(params_file, bad, message, capsys):
    assert main(["discover", "--params", str(params_file), "--set", bad]) == 2
    assert message in capsys.readouterr().err
