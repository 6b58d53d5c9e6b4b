"""Discovery's thresholds are chosen on val images only and test is scored once.

A tiny store of six 144x144 images, each an 8x8 grid of random patch features.
Five hold one object (the same four features on a 2x2 constellation, boxed as
a ``cat``); ``im5`` holds the four features with its top corners swapped, which
only a loose ``max_residual`` verifies. ``im4`` and ``im5`` are val images
(trainval, val by content hash), ``im0``-``im3`` test images.
"""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from ctx_core.config import load_params
from ctx_core.discovery.run import run_discover
from ctx_core.discovery.tune import choose
from ctx_core.feature_store import FeatureWriter
from ctx_core.store.layout import in_val
from tests.conftest import write_params

GRID, STRIDE, PATCH, DIM = 8, 16, 32, 64
OBJECTS = {"im0": (0, 0), "im1": (3, 1), "im2": (5, 5), "im3": (1, 4), "im4": (2, 2), "im5": (4, 0)}
SPLITS = {"im0": "test", "im1": "test", "im2": "test", "im3": "test", "im4": "val", "im5": "val"}
VAL_SHA, TRAIN_SHA = "0" * 64, "f" * 64
LOOSE = {"max_residual": 10.0, "max_scale_ratio": 100.0, "min_members": 3, "merge_distance": 0.7}
# every key, so that the repository's grid (the params file extends it) does not leak in
STRICT_TOO = {"max_residual": [0.3], "max_scale_ratio": [], "min_members": [], "merge_distance": []}


def build(folder, classes: dict[str, str]) -> None:
    """Store and learned feature set under ``folder``; ``classes`` gives each image's object class."""
    store = folder / "store"
    (store / "images").mkdir(parents=True)
    is_test = [SPLITS[i] == "test" for i in OBJECTS]
    manifest = pd.DataFrame({"image_id": list(OBJECTS), "split": ["test" if t else "trainval" for t in is_test],
                             "sha256": [TRAIN_SHA if t else VAL_SHA for t in is_test]})
    assert in_val(VAL_SHA) and not in_val(TRAIN_SHA)
    manifest.to_parquet(store / "manifest.parquet", index=False)
    side = (GRID - 1) * STRIDE + PATCH
    # the box around the object's four patches, VOC 1-based inclusive
    span = 2 * STRIDE + PATCH
    boxes = [(i, classes[i], c * STRIDE + 1, r * STRIDE + 1, c * STRIDE + span, r * STRIDE + span, False)
             for i, (c, r) in OBJECTS.items()]
    pd.DataFrame(boxes, columns=["image_id", "class", "xmin", "ymin", "xmax", "ymax", "difficult"]).to_parquet(
        store / "annotations.parquet", index=False)
    gen = torch.Generator().manual_seed(0)
    parts = torch.randn(4, DIM, generator=gen)
    writer = FeatureWriter(folder / "features" / "learned", DIM, True, 1000,
                           {"sampling": "dense", "stride_fraction": 0.5, "store": str(store), "data_version": "tiny"})
    c, r = np.meshgrid(np.arange(GRID), np.arange(GRID))
    for image_id, (c0, r0) in OBJECTS.items():
        Image.new("RGB", (side, side), (90, 120, 150)).save(store / "images" / f"{image_id}.jpg")
        feats = torch.randn(GRID * GRID, DIM, generator=gen)
        order = [1, 0, 2, 3] if image_id == "im5" else [0, 1, 2, 3]
        for slot, (dc, dr) in zip(order, ((0, 0), (2, 0), (0, 2), (2, 2))):
            feats[(r0 + dr) * GRID + c0 + dc] = parts[slot] + 0.05 * torch.randn(DIM, generator=gen)
        index = pd.DataFrame({"image_id": image_id, "x0": c.ravel() * STRIDE, "y0": r.ravel() * STRIDE,
                              "x1": c.ravel() * STRIDE + PATCH, "y1": r.ravel() * STRIDE + PATCH, "scale": 1.0})
        writer.add(feats, index)
    writer.close()


def discover_with(tmp_path, name: str, classes: dict[str, str], tune: dict | None = STRICT_TOO) -> dict:
    """``run_discover`` on a fresh tiny store: loose thresholds as the params' values,
    ``max_residual`` 0.3 also tried on val, purity taken at half coverage."""
    folder = tmp_path / name
    build(folder, classes)
    discovery = {"out": str(folder / "discovery"), "reports": str(folder / "reports"), "constellations": 10_000,
                 "top_k": 5, "coverage_at": 0.5, "montage_clusters": 2, "montage_members": 2, **LOOSE,
                 "tune": tune}
    settings = load_params(write_params(folder, features={"out": str(folder / "features")}, discovery=discovery))
    result = run_discover(settings)
    assert json.loads((folder / "reports" / "metrics.json").read_text()) == json.loads(json.dumps(result.metrics))
    return {"metrics": result.metrics, "tuning": pd.read_csv(folder / "reports" / "tuning.csv"),
            "curve": pd.read_csv(folder / "reports" / "purity_coverage" / "learned.csv")}


CATS = dict.fromkeys(OBJECTS, "cat")


def test_the_loose_default_stays_when_val_agrees_and_the_strict_setting_wins_when_val_disagrees(tmp_path):
    # both val objects cats: the loose setting covers both purely, a tie with the strict one at half coverage
    agree = discover_with(tmp_path, "agree", CATS)
    assert agree["metrics"]["learned"]["chosen_max_residual"] == 10.0
    assert agree["metrics"]["learned"]["purity_at_50pct_coverage_val"] == 1.0
    # im5's object a dog on val: the loose setting's cluster is half pure there; the strict one is chosen
    disagree = discover_with(tmp_path, "disagree", {**CATS, "im5": "dog"})
    learned = disagree["metrics"]["learned"]
    assert learned["chosen_max_residual"] == 0.3
    assert {k: learned[f"chosen_{k}"] for k in ("max_scale_ratio", "min_members", "merge_distance")} == {
        k: LOOSE[k] for k in ("max_scale_ratio", "min_members", "merge_distance")}
    table = disagree["tuning"].set_index("max_residual")
    assert table.loc[0.3, "chosen"] and table.loc[0.3, "val_purity_at_coverage"] == 1.0
    assert table.loc[10.0, "val_purity_at_coverage"] == 0.5 and table.loc[10.0, "changed"] == 0
    assert "chosen on val: 2 images, 2 non-difficult objects: 2 settings of max_residual" in disagree["metrics"]["tuning"]


def test_test_labels_do_not_move_the_choice_but_do_move_the_test_numbers(tmp_path):
    base = discover_with(tmp_path, "base", {**CATS, "im5": "dog"})
    relabelled = discover_with(tmp_path, "relabelled", {**CATS, "im5": "dog", "im0": "dog", "im1": "cow", "im2": "dog"})
    pd.testing.assert_frame_equal(base["tuning"], relabelled["tuning"])
    before, after = base["metrics"]["learned"], relabelled["metrics"]["learned"]
    assert {k: v for k, v in before.items() if k.startswith("chosen_") or k.endswith("_val")} == {
        k: v for k, v in after.items() if k.startswith("chosen_") or k.endswith("_val")}
    assert before["purity_at_50pct_coverage_test"] == 1.0
    assert after["purity_at_50pct_coverage_test"] == pytest.approx(0.5)  # 2 dogs of 4 test members


def test_test_numbers_count_only_test_images(tmp_path):
    run = discover_with(tmp_path, "split", {**CATS, "im5": "dog"})
    assert run["metrics"]["evaluation"] == "test: 4 images, 4 non-difficult objects"
    top = run["curve"].iloc[0]
    # the chosen (strict) cluster has members on im0-im4; only the four on test images are scored
    assert (top["members"], top["pure_members"], top["coverage"]) == (4, 4, 1.0)
    assert run["metrics"]["learned"]["purity_at_50pct_coverage_test"] == 1.0


@pytest.mark.parametrize("tune", [None, {k: [] for k in STRICT_TOO}], ids=["null", "empty lists"])
def test_no_tuning_grid_keeps_the_params_thresholds(tmp_path, tune):
    run = discover_with(tmp_path, "fixed", {**CATS, "im5": "dog"}, tune=tune)
    learned = run["metrics"]["learned"]
    assert learned["chosen_max_residual"] == LOOSE["max_residual"] and len(run["tuning"]) == 1
    assert run["metrics"]["tuning"].startswith("off (discovery.tune lists no other value)")
    # the loose cluster's test members are all on cats
    assert learned["purity_at_50pct_coverage_test"] == 1.0


def test_choice_prefers_reached_purity_then_area_then_fewest_changes():
    table = pd.DataFrame({"changed": [0, 1, 1, 2], "val_purity_at_coverage": [0.8, 0.9, 0.9, np.nan],
                          "val_area": [0.5, 0.1, 0.2, 0.9]})
    assert choose(table) == 1  # 0.9 reached twice: the first of the fewest changes, area not consulted
    table["val_purity_at_coverage"] = np.nan
    assert choose(table) == 3  # nothing reaches the coverage: largest area
    table["val_area"] = 0.3
    assert choose(table) == 0  # all tied: the params' own values
