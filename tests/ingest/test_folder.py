"""Ingesting a local folder: every good mode stored as 8-bit RGB, every broken file quarantined with its reason."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps

from ctx_core.fsutil import dvc_dir_hash
from ctx_core.ingest.normalise import target_size
from ctx_core.ingest.run import run_ingest
from ctx_core.ingest.resolve import SourceError
from tests.conftest import write_params
from tests.ingest.conftest import BROKEN, GOOD, GRID, SMALL_GRID, ingest_settings, noise, tree_digest


def ctx(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctx_core.cli", "ingest", *args], capture_output=True, text=True)


def cli_params(tmp_path: Path, source: Path, **ingest) -> Path:
    cfg = {"source": str(source), "out": str(tmp_path / "store"), "reports": str(tmp_path / "reports"),
           "workers": 2, **ingest}
    return write_params(tmp_path / "p", data={"ingest": cfg}, pretrain=SMALL_GRID)


def test_mixed_folder_takes_every_good_image_and_reports_every_broken_one(tmp_path, mixed_folder):
    before = tree_digest(mixed_folder)
    proc = ctx("--params", str(cli_params(tmp_path, mixed_folder)), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)


    def label(rel: str) -> str:  # the source as configured, joined with the file's relative path
        return f"{mixed_folder}/{rel}"

    assert sorted(summary["ingested"]) == sorted(label(r) for r in GOOD)
    store = Path(summary["store"])
    report = json.loads((store / "quarantine.json").read_text())
    assert {e["source"]: e["kind"] for e in report} == {label(r): kind for r, kind in BROKEN.items()}
    assert summary["quarantined"] == [{"source": e["source"], "reason": e["reason"]} for e in report]
    reasons = {e["source"]: e["reason"] for e in report}
    assert reasons[label("rgb_copy.jpg")] == f"duplicate of {label('rgb.jpg')}"  # first in sorted order kept
    assert reasons[label("tiny.png")] == f"too small for the patch grid (8x8 < {GRID} px)"
    assert reasons[label("empty.jpg")] == "not an image (empty file)"
    assert reasons[label("bomb.png")].startswith("decompression bomb")
    assert reasons[label("dangling.jpg")].startswith("broken link")
    counts = summary["counts"]
    assert counts["ingested"] == len(GOOD) and counts["quarantined"] == len(BROKEN) and counts["ignored_files"] == 1
    assert summary["data_version"] == dvc_dir_hash(store)

    manifest = pd.read_parquet(store / "manifest.parquet")
    assert list(manifest.columns) == ["image_id", "source", "sha256", "orig_width", "orig_height", "width", "height",
                                      "split"]
    assert set(manifest["split"]) == {"unlabeled"}
    for row in manifest.itertuples():
        rel = row.source[len(str(mixed_folder)) + 1:]
        assert (row.width, row.height) == (row.orig_width, row.orig_height) == GOOD[rel]
        assert row.image_id == row.sha256[:16]
        with Image.open(store / "images" / f"{row.image_id}.jpg") as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == GOOD[rel]
    assert sorted(p.name for p in (store / "images").iterdir()) == sorted(f"{i}.jpg" for i in manifest["image_id"])
    assert (store / "classes.txt").read_text() == "" and len(pd.read_parquet(store / "annotations.parquet")) == 0
    assert tree_digest(mixed_folder) == before  # sources only read


def stored(result, rel: str, folder: Path) -> np.ndarray:
    manifest = pd.read_parquet(result.store / "manifest.parquet").set_index("source")
    image_id = manifest.loc[f"{folder}/{rel}", "image_id"]
    return np.asarray(Image.open(result.store / "images" / f"{image_id}.jpg"), np.float64)


def test_modes_become_faithful_rgb(tmp_path, mixed_folder):
    result = run_ingest(ingest_settings(tmp_path, mixed_folder), progress=False)
    rgba = stored(result, "rgba.png", mixed_folder)
    assert rgba[:, :40].min() > 245  # transparent half composited on white
    src = np.asarray(Image.open(mixed_folder / "rgba.png").convert("RGB"), np.float64)
    assert np.abs(rgba[:, 50:] - src[:, 50:]).mean() < 3

    deep = stored(result, "deep16.png", mixed_folder)
    want = np.arange(90) * 700 / 257  # 16-bit values scaled to 8 bits, not clipped at 255
    assert np.abs(deep[..., 0].mean(axis=0) - want).max() < 4 and deep.max() > 200

    gray = stored(result, "gray.png", mixed_folder)
    assert np.abs(gray[..., 0] - gray[..., 2]).max() <= 2
    cmyk = stored(result, "cmyk.jpg", mixed_folder)
    assert np.abs(cmyk - np.asarray(Image.open(mixed_folder / "cmyk.jpg").convert("RGB"), np.float64)).mean() < 3

    upright = np.asarray(ImageOps.exif_transpose(Image.open(mixed_folder / "rotated.jpg")), np.float64)
    turned = stored(result, "rotated.jpg", mixed_folder)
    assert turned.shape == upright.shape == (100, 80, 3) and np.abs(turned - upright).mean() < 3

    manifest = pd.read_parquet(result.store / "manifest.parquet").set_index("source")
    rgb_id = manifest.loc[f"{mixed_folder}/rgb.jpg", "image_id"]
    # an RGB JPEG that needs no change is copied, not re-encoded
    assert (result.store / "images" / f"{rgb_id}.jpg").read_bytes() == (mixed_folder / "rgb.jpg").read_bytes()

    dropped = run_ingest(ingest_settings(tmp_path, mixed_folder, "drop", alpha="drop"), progress=False)
    left = stored(dropped, "rgba.png", mixed_folder)[:, :40]
    assert left.mean() < 200 and np.abs(left - src[:, :40]).mean() < 3  # the colour under the alpha is kept


def test_big_images_downscale_deterministically_within_the_budget(tmp_path):
    src = tmp_path / "big"
    src.mkdir()
    for k, (w, h) in enumerate([(400, 300), (300, 400), (640, 200), (1000, 70), (180, 150)]):
        noise(w, h, k).save(src / f"im{k}.png")
    result = run_ingest(ingest_settings(tmp_path, src, min_pixels=20000, max_pixels=40000), progress=False)
    m = pd.read_parquet(result.store / "manifest.parquet").set_index("source")
    for k, row in enumerate(m.loc[[f"{src}/im{k}.png" for k in range(5)]].itertuples()):
        area = row.width * row.height
        if k == 4:  # 27,000 px: under the budget, unchanged
            assert (row.width, row.height) == (180, 150)
        elif k == 3:  # 70 px tall: shrinks only until the shorter side holds the grid
            assert row.height == GRID and abs(row.width - 1000 * GRID / 70) <= 1
        else:
            assert 19_000 <= area <= 41_000
            assert abs(row.width / row.height - row.orig_width / row.orig_height) < 0.02
            assert min(row.width, row.height) >= GRID
    again = run_ingest(ingest_settings(tmp_path, src, "again", min_pixels=20000, max_pixels=40000), progress=False)
    assert again.data_version == result.data_version
    targets = {target_size(400, 300, f"{k:016x}" + "0" * 48, 20000, 40000, GRID) for k in range(0, 2**64, 2**60)}
    assert len(targets) > 10  # the target is spread over the range, not one fixed size


def test_target_size_keeps_the_patch_grid():
    assert target_size(192, 144, "f" * 64, 20000, 40000, 132) is None
    w, h = target_size(2000, 300, "0" * 64, 20000, 40000, 132)
    assert h == 132 and abs(w / h - 2000 / 300) < 0.02  # area target would give 52 px; grid wins
    assert target_size(600, 400, "0" * 64, 150_000, 450_000, 398) is None  # the paper's budget keeps it


def test_rerun_and_worker_count_give_the_same_store(tmp_path, mixed_folder):
    one = run_ingest(ingest_settings(tmp_path, mixed_folder, "one", workers=1), progress=False)
    files = tree_digest(one.store)
    again = run_ingest(ingest_settings(tmp_path, mixed_folder, "one", workers=1), force=True, progress=False)
    assert again.data_version == one.data_version and tree_digest(again.store) == files
    two = run_ingest(ingest_settings(tmp_path, mixed_folder, "two", workers=2), progress=False)
    assert two.data_version == one.data_version and tree_digest(two.store) == files


def test_nothing_usable_exits_2_with_one_line_and_no_store(tmp_path):
    src = tmp_path / "junk"
    src.mkdir()
    (src / "a.jpg").write_text("nope")
    (src / "b.png").write_bytes(b"")
    noise(10, 10).save(src / "c.png")
    proc = ctx("--params", str(cli_params(tmp_path, src)))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("ctx: error: no image ingested from")
    assert "2 not an image" in proc.stderr and "1 too small for the patch grid" in proc.stderr
    assert not (tmp_path / "store").exists()
    assert len(json.loads((tmp_path / "reports" / "quarantine.json").read_text())) == 3

    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("x")
    proc = ctx("--params", str(cli_params(tmp_path, empty)))
    assert proc.returncode == 2 and "no image found" in proc.stderr and ".webp" in proc.stderr


@pytest.mark.parametrize("kind", ["missing", "plain-file", "out-inside", "source-inside"])
def test_bad_source_or_store_fails_naming_it(tmp_path, kind):
    photos = tmp_path / "photos"
    photos.mkdir()
    noise(90, 80).save(photos / "a.png")
    (tmp_path / "notes.txt").write_text("x")
    source, out = {
        "missing": (tmp_path / "nope", tmp_path / "store"),
        "plain-file": (tmp_path / "notes.txt", tmp_path / "store"),
        "out-inside": (photos, photos / "store"),
        "source-inside": (photos, tmp_path),
    }[kind]
    settings = ingest_settings(tmp_path, source, out=str(out))
    with pytest.raises(SourceError) as info:
        run_ingest(settings, force=True, progress=False)
    message = str(info.value)
    assert "\n" not in message and "data.ingest" in message
    assert (photos / "a.png").is_file()
