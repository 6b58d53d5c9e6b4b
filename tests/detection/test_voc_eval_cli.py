"""``ctx voc-eval`` on results files, the VOC/store readers, and their error messages."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ctx_core.detection.evaluate import ClassDetections
from ctx_core.detection.results import write_results
from ctx_core.store.labelled import DatasetError, read_detection_split, sanitize_boxes


def ctx(*args):
    return subprocess.run([sys.executable, "-m", "ctx_core.cli", *args], capture_output=True, text=True)


def perfect_detections(split) -> dict[str, ClassDetections]:
    """Every ground-truth object of ``split`` as a detection (difficult ones included)."""
    out = {}
    for cls in split.present_classes:
        rows = [(r.image_id, b) for r in split.images for n, b in zip(r.names, r.boxes) if n == cls]
        out[cls] = ClassDetections(np.array([i for i, _ in rows], dtype=object), np.linspace(1, .5, len(rows)),
                                   np.array([b for _, b in rows]))
    return out


def test_perfect_results_score_one_and_empty_files_zero(voc_root, tmp_path):
    split = read_detection_split(voc_root, "test")
    dets = perfect_detections(split)
    write_results(tmp_path / "res", "test", dets)
    proc = ctx("voc-eval", "--root", str(voc_root), "--split", "test", "--detections", str(tmp_path / "res"))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out["ap"]) == set(split.present_classes)
    assert out["mAP"] == pytest.approx(1.0) and out["notes"] == []

    empty = sorted(dets)[0]
    (tmp_path / "res" / f"comp4_det_test_{empty}.txt").write_text("")
    proc = ctx("voc-eval", "--root", str(voc_root), "--detections", str(tmp_path / "res"), "--metric", "area")
    out = json.loads(proc.stdout)
    assert out["ap"][empty] == 0.0 and out["metric"] == "area"
    assert f"{empty}: comp4_det_test_{empty}.txt is empty; AP 0" in out["notes"]
    assert f"ctx: note: {empty}: comp4_det_test_{empty}.txt is empty; AP 0" in proc.stderr


def test_malformed_line_names_file_and_line(voc_root, tmp_path):
    split = read_detection_split(voc_root, "test")
    write_results(tmp_path, "test", perfect_detections(split))
    cls = split.present_classes[0]
    path = tmp_path / f"comp4_det_test_{cls}.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "000001 0.5 1 2 3", *lines[1:]]) + "\n")
    proc = ctx("voc-eval", "--root", str(voc_root), "--detections", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert f"comp4_det_test_{cls}.txt:2: '000001 0.5 1 2 3' is not 'image_id score xmin ymin xmax ymax'" in proc.stderr


def test_unknown_class_and_missing_files_are_errors(voc_root, tmp_path):
    (tmp_path / "comp4_det_test_unicorn.txt").write_text("000001 0.5 1 2 3 4\n")
    proc = ctx("voc-eval", "--root", str(voc_root), "--detections", str(tmp_path))
    assert proc.returncode == 2 and "unknown class name(s) unicorn" in proc.stderr and "classes of split 'test'" in proc.stderr
    proc = ctx("voc-eval", "--root", str(voc_root), "--split", "holdout", "--detections", str(tmp_path))
    assert proc.returncode == 2 and "has no split 'holdout'" in proc.stderr and "test, train, trainval, unlabeled, val" in proc.stderr
    proc = ctx("voc-eval", "--root", str(voc_root), "--split", "trainval", "--detections", str(tmp_path))
    assert proc.returncode == 2 and "no results file comp4_det_trainval_<class>.txt" in proc.stderr


def test_boxes_outside_the_image_are_clipped_or_skipped(voc_root, tmp_path):
    root = tmp_path / "voc"
    shutil.copytree(voc_root, root)
    image_id = (root / "ImageSets/Main/test.txt").read_text().split()[0]
    xml = root / "Annotations" / f"{image_id}.xml"
    text = xml.read_text()
    extra = ("<object><name>tree</name><difficult>0</difficult><bndbox><xmin>180</xmin><ymin>10</ymin>"
             "<xmax>400</xmax><ymax>30</ymax></bndbox></object>"
             "<object><name>tree</name><difficult>0</difficult><bndbox><xmin>500</xmin><ymin>10</ymin>"
             "<xmax>600</xmax><ymax>30</ymax></bndbox></object></annotation>")
    xml.write_text(text.replace("</annotation>", extra))
    split = read_detection_split(root, "test")
    rec = next(r for r in split.images if r.image_id == image_id)
    assert list(rec.boxes[-1]) == [180, 10, rec.width, 30]
    assert any("clipped in 1 image(s): " + image_id in n for n in split.notes)
    assert any("skipped in 1 image(s): " + image_id in n for n in split.notes)

    boxes = np.array([[0., 5, 10, 10], [5, 5, 4, 10], [1, 1, 3, 3]])
    keep, clipped, skipped = sanitize_boxes(boxes, 100, 100)
    assert keep.tolist() == [True, False, True] and (clipped, skipped) == (1, 1)


def test_store_and_voc_root_read_the_same_split(voc_root, tmp_path):
    from ctx_core.config import load_params
    from ctx_core.ingest.run import run_ingest
    from tests.conftest import write_params

    params = write_params(tmp_path / "p", data={"ingest": {"source": str(voc_root), "out": str(tmp_path / "store"),
                                                           "reports": str(tmp_path / "r"), "workers": 1}})
    run_ingest(load_params(params), progress=False)
    store, voc = read_detection_split(tmp_path / "store", "test"), read_detection_split(voc_root, "test")
    assert store.classes == voc.classes and [r.image_id for r in store.images] == [r.image_id for r in voc.images]
    for a, b in zip(store.images, voc.images):
        assert a.names == b.names and np.array_equal(a.boxes, b.boxes) and np.array_equal(a.difficult, b.difficult)
    with pytest.raises(DatasetError, match="has no image in split 'holdout'"):
        read_detection_split(tmp_path / "store", "holdout")
    with pytest.raises(DatasetError, match="neither an ingest store"):
        read_detection_split(tmp_path / "p", "test")
