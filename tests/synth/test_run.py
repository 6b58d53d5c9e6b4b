"""ctx synth end to end: VOC files, determinism, splits, bad input."""

import filecmp
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ctx_core.config import ConfigError, load_params
from ctx_core.fsutil import dvc_dir_hash
from ctx_core.synth import run as synth_run
from ctx_core.synth.run import run_synth
from tests.conftest import write_params


def synth(tmp_path: Path, name: str, **synth_cfg) -> Path:
    params = write_params(tmp_path / f"p-{name}", data={"synth": {"out": str(tmp_path / name),
                                                                  "reports": str(tmp_path / f"r-{name}"),
                                                                  **synth_cfg}})
    run_synth(load_params(params), progress=False)
    return tmp_path / name


def read_voc(root: Path) -> dict[str, dict]:
    """Parse every annotation with the standard library only (independent of the writer)."""
    out = {}
    for xml in sorted((root / "Annotations").glob("*.xml")):
        tree = ET.parse(xml).getroot()
        size = tree.find("size")
        objs = []
        for o in tree.findall("object"):
            bb = o.find("bndbox")
            objs.append({
                "name": o.findtext("name"),
                "pose": o.findtext("pose"),
                "truncated": int(o.findtext("truncated")),
                "difficult": int(o.findtext("difficult")),
                "box": tuple(int(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")),
            })
        out[xml.stem] = {
            "filename": tree.findtext("filename"),
            "width": int(size.findtext("width")),
            "height": int(size.findtext("height")),
            "depth": int(size.findtext("depth")),
            "objects": objs,
        }
    return out


def test_same_arguments_give_identical_trees(tmp_path):
    a = synth(tmp_path, "a", images=60, seed=1, workers=1)
    b = synth(tmp_path, "b", images=60, seed=1, workers=2)  # worker count must not matter
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) > 120
    match, mismatch, errors = filecmp.cmpfiles(a, b, [str(f) for f in files_a], shallow=False)
    assert not mismatch and not errors
    assert dvc_dir_hash(a) == dvc_dir_hash(b)
    c = synth(tmp_path, "c", images=60, seed=2, workers=1)
    assert dvc_dir_hash(c) != dvc_dir_hash(a)


def test_voc_layout_boxes_and_splits(tmp_path):
    root = synth(tmp_path, "voc", images=200, seed=3)
    ann = read_voc(root)
    jpgs = {p.stem for p in (root / "JPEGImages").glob("*.jpg")}
    assert set(ann) == jpgs and len(jpgs) == 200
    main = root / "ImageSets" / "Main"
    classes = (main / "classes.txt").read_text().split()
    assert len(classes) >= 8
    for image_id, a in ann.items():
        assert a["filename"] == f"{image_id}.jpg" and a["depth"] == 3
        with Image.open(root / "JPEGImages" / a["filename"]) as im:
            assert im.size == (a["width"], a["height"]) and im.mode == "RGB"
        assert 1 <= len(a["objects"]) <= 6
        for o in a["objects"]:
            x0, y0, x1, y1 = o["box"]
            # VOC: 1-based inclusive pixel coordinates inside the image
            assert 1 <= x0 <= x1 <= a["width"] and 1 <= y0 <= y1 <= a["height"]
            assert o["name"] in classes and o["truncated"] in (0, 1) and o["difficult"] in (0, 1)
            assert o["pose"] in ("Left", "Right", "Frontal", "Unspecified")

    splits = {s: (main / f"{s}.txt").read_text().split() for s in ("unlabeled", "trainval", "test")}
    listed = [i for ids in splits.values() for i in ids]
    assert sorted(listed) == sorted(jpgs)  # every image in exactly one split, no unknown ids
    assert len(splits["unlabeled"]) > len(splits["trainval"]) > 0 and len(splits["test"]) > 0
    for split in ("trainval", "test"):
        present = {o["name"] for i in splits[split] for o in ann[i]["objects"] if not o["difficult"]}
        assert present == set(classes), f"{split} misses {set(classes) - present}"

    # per-class files, recomputed from the XML
    for split, ids in splits.items():
        for cls in classes:
            lines = (main / f"{cls}_{split}.txt").read_text().splitlines()
            got = {line.split()[0]: int(line.split()[1]) for line in lines}
            assert list(got) == ids
            for i in ids:
                flags = [o["difficult"] for o in ann[i]["objects"] if o["name"] == cls]
                want = -1 if not flags else (0 if all(flags) else 1)
                assert got[i] == want


def test_objects_vary_in_scale_and_mark_hard_cases(tmp_path):
    root = synth(tmp_path, "var", images=300, seed=4)
    heights = defaultdict(list)
    flags = {"truncated": 0, "difficult": 0}
    for a in read_voc(root).values():
        for o in a["objects"]:
            flags["truncated"] += o["truncated"]
            flags["difficult"] += o["difficult"]
            x0, y0, x1, y1 = o["box"]
            if not o["truncated"] and not o["difficult"]:
                heights[o["name"]].append(y1 - y0 + 1)
            if min(x1 - x0 + 1, y1 - y0 + 1) < 12:
                assert o["difficult"] == 1  # tiny objects are difficult
    assert flags["truncated"] > 0 and flags["difficult"] > 0
    for cls, hs in heights.items():
        assert max(hs) / min(hs) >= 3, f"{cls}: heights {min(hs)}..{max(hs)}"


def test_backgrounds_are_textured(tmp_path):
    root = synth(tmp_path, "tex", images=20, seed=5)
    for jpg in (root / "JPEGImages").glob("*.jpg"):
        px = np.asarray(Image.open(jpg).convert("L"), np.float32)
        rows = np.abs(np.diff(px, axis=1)).mean()
        assert px.std() > 8 and rows > 1.0  # neither flat colour nor a single smooth ramp


def test_sprite_folder_supplies_the_classes(tmp_path):
    sprites = tmp_path / "sprites"
    for cls, color in (("kite", (250, 0, 0, 255)), ("lamp", (0, 0, 250, 255))):
        (sprites / cls).mkdir(parents=True)
        for k in range(2):
            im = Image.new("RGBA", (40 + 10 * k, 60), (0, 0, 0, 0))
            im.paste(color, (5, 5, 35 + 10 * k, 55))
            im.save(sprites / cls / f"s{k}.png")
    (sprites / "lamp" / "notes.txt").write_text("not an image")
    root = synth(tmp_path, "spr", images=30, seed=6, sprites=str(sprites))
    assert (root / "ImageSets/Main/classes.txt").read_text().split() == ["kite", "lamp"]
    names = {o["name"] for a in read_voc(root).values() for o in a["objects"]}
    assert names == {"kite", "lamp"}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctx_core.cli", "synth", *args], capture_output=True, text=True)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--images", "0"], "data.synth.images = 0"),
        (["--size", "-8"], "data.synth.size = -8"),
        (["--size", "120"], "cannot hold the patch grid"),
        (["--sprites", "EMPTY"], "has no images"),
        (["--sprites", "MISSING"], "does not exist"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, args, fragment):
    (tmp_path / "EMPTY" / "cls").mkdir(parents=True)
    args = [a.replace("EMPTY", str(tmp_path / "EMPTY")).replace("MISSING", str(tmp_path / "nope")) for a in args]
    params = write_params(tmp_path / "p")
    proc = run_cli("--params", str(params), "--out", str(tmp_path / "out"), "--images", "5", *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and fragment in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_non_empty_output_needs_force_and_unwritable_output_fails(tmp_path):
    params = write_params(tmp_path / "p")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    proc = run_cli("--params", str(params), "--out", str(out), "--images", "4")
    assert proc.returncode == 2 and "not empty" in proc.stderr and "--force" in proc.stderr
    assert (out / "keep.txt").read_text() == "mine"
    proc = run_cli("--params", str(params), "--out", str(out), "--images", "4", "--force")
    assert proc.returncode == 0, proc.stderr
    assert not (out / "keep.txt").exists() and len(list((out / "JPEGImages").iterdir())) == 4

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    proc = run_cli("--params", str(params), "--out", str(blocker / "sub"), "--images", "4")
    assert proc.returncode == 2 and "is a file" in proc.stderr


def test_failure_mid_write_leaves_no_partial_dataset(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("previous dataset")
    params = write_params(tmp_path / "p", data={"synth": {"out": str(out), "images": 6}})

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(synth_run, "write_image_sets", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        run_synth(load_params(params), force=True, progress=False)
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_size_check_uses_the_configured_patch_grid(tmp_path):
    params = write_params(tmp_path / "p", pretrain={"patch_size": 16, "gap": 8, "jitter": 1})
    settings = load_params(params, ["data.synth.size=100", f"data.synth.out={tmp_path / 'o'}",
                                    "data.synth.images=3", f"data.synth.reports={tmp_path / 'r'}"])
    assert run_synth(settings, progress=False).images == 3  # 75 px short side holds a 66 px grid
    with pytest.raises(ConfigError, match="patch grid"):
        run_synth(load_params(params, ["data.synth.size=80"]), progress=False)
