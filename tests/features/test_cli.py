import json

import pytest

from ctx_core.cli import main
from ctx_core.feature_store import FeatureSet
from tests.features.conftest import feature_settings


def test_ctx_extract_prints_a_summary(tmp_path, store, encoder_file, capsys):
    settings = feature_settings(tmp_path, store, encoder_file, {"max_images": 4, "baselines": ["raw_pixels"]})
    assert main(["extract", "--params", str(settings.source), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["sets"]) == {"learned", "raw_pixels"} and out["images"] == 4 and out["patches"] > 0
    assert len(FeatureSet.open(tmp_path / "features" / "learned")) == out["patches"]


def test_ctx_extract_with_a_missing_encoder_is_one_line(tmp_path, store, capsys):
    settings = feature_settings(tmp_path, store, tmp_path / "missing.pt")
    assert main(["extract", "--params", str(settings.source)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ctx: error: encoder file") and "missing.pt does not exist" in err and err.count("\n") == 1


def test_ctx_nn_answers_for_a_box_of_a_store_image(extracted, capsys):
    first = FeatureSet.open(extracted.path(extracted.params.features.out) / "learned").index.iloc[0]
    png = extracted.root / "nn.png"
    code = main(["nn", "--params", str(extracted.source), "--image", first["image_id"], "--box", "0,0,64,64",
                 "--k", "3", "--png", str(png)])
    assert code == 0
    matches = json.loads(capsys.readouterr().out)
    assert len(matches) == 3 and set(matches[0]) == {"image_id", "box", "score"}
    assert all(m["image_id"] != first["image_id"] for m in matches)
    assert matches[0]["score"] >= matches[1]["score"] >= matches[2]["score"]
    assert png.stat().st_size > 500


def test_ctx_nn_with_an_outside_image_file(extracted, store, capsys):
    image = sorted((store / "images").glob("*.jpg"))[0]
    assert main(["nn", "--params", str(extracted.source), "--image", str(image), "--box", "10,10,50,50", "--k", "2"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2


@pytest.mark.parametrize("args, message", [
    (["--box", "0,0,64,64", "--k", "100000"], "k = 100000 is larger than the number of candidates"),
    (["--box", "64,0,10,10"], "expected x0,y0,x1,y1 with 0 <= x0 < x1"),
    (["--box", "0,0,900,10"], "lies outside the"),
])
def test_ctx_nn_errors(extracted, args, message, capsys):
    image = FeatureSet.open(extracted.path(extracted.params.features.out) / "learned").index.iloc[0]["image_id"]
    assert main(["nn", "--params", str(extracted.source), "--image", image, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_ctx_nn_with_an_unknown_image(extracted, capsys):
    assert main(["nn", "--params", str(extracted.source), "--image", "no-such", "--box", "0,0,8,8"]) == 2
    assert "neither an image file nor an image id of the store" in capsys.readouterr().err
