"""VOC sources: the synthetic benchmark and a hand-made VOC2007-style root
with lists, bad boxes, a malformed XML, a resized and a rotated image."""

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ctx_core.config import load_params
from ctx_core.fsutil import dvc_dir_hash
from ctx_core.ingest.run import run_ingest
from ctx_core.synth.run import run_synth
from tests.conftest import write_params
from tests.ingest.conftest import SMALL_GRID, ingest_settings, jpeg_bytes, noise, tree_digest, with_exif_orientation


def make_synth(tmp_path: Path, images: int = 10) -> Path:
    out = tmp_path / "synth"
    params = write_params(tmp_path / "ps", data={"synth": {"out": str(out), "reports": str(tmp_path / "rs"),
                                                           "images": images, "size": 96, "seed": 2}},
                          pretrain=SMALL_GRID)
    run_synth(load_params(params), progress=False)
    return out


def xml_boxes(root: Path) -> list[tuple]:
    rows = []
    for path in sorted((root / "Annotations").glob("*.xml")):
        for o in ET.parse(path).getroot().findall("object"):
            bb = o.find("bndbox")
            rows.append((path.stem, o.findtext("name"), *(int(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")),
                         o.findtext("difficult") == "1", o.findtext("truncated") == "1"))
    return rows


def test_synthetic_voc_keeps_ids_splits_boxes_and_classes(tmp_path):
    root = make_synth(tmp_path)
    before = tree_digest(root)
    result = run_ingest(ingest_settings(tmp_path, root), progress=False)
    manifest = pd.read_parquet(result.store / "manifest.parquet")
    ids = sorted(p.stem for p in (root / "JPEGImages").glob("*.jpg"))
    assert manifest["image_id"].tolist() == ids
    main = root / "ImageSets" / "Main"
    for split in ("unlabeled", "trainval", "test"):
        assert sorted(manifest.loc[manifest["split"] == split, "image_id"]) == (main / f"{split}.txt").read_text().split()
    ann = pd.read_parquet(result.store / "annotations.parquet")
    assert list(ann.itertuples(index=False, name=None)) == xml_boxes(root)  # 96-px images: boxes unchanged
    assert (result.store / "classes.txt").read_text() == (main / "classes.txt").read_text()
    for image_id in ids:  # RGB JPEGs are copied byte for byte
        assert (result.store / "images" / f"{image_id}.jpg").read_bytes() == (root / "JPEGImages" / f"{image_id}.jpg").read_bytes()
    assert result.quarantined == [] and result.data_version == dvc_dir_hash(result.store)
    assert tree_digest(root) == before


def voc_xml(w: int, h: int, objects: list[tuple]) -> str:
    objs = "".join(
        f"<object><name>{n}</name><truncated>{t}</truncated><difficult>{d}</difficult>"
        f"<bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{e}</ymax></bndbox></object>"
        for n, a, b, c, e, d, t in objects
    )
    return f"<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth></size>{objs}</annotation>"


def red_box(im: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """``im`` with the VOC box (1-based inclusive) painted pure red."""
    arr = np.asarray(im.convert("RGB")).copy() // 2
    x0, y0, x1, y1 = box
    arr[y0 - 1:y1, x0 - 1:x1] = (255, 0, 0)
    return Image.fromarray(arr)


def red_bbox(path: Path) -> tuple[int, int, int, int]:
    """The red region of a stored image as a VOC box."""
    arr = np.asarray(Image.open(path), np.int32)
    red = (arr[..., 0] > 180) & (arr[..., 1] < 90) & (arr[..., 2] < 90)
    ys, xs = np.nonzero(red)
    return xs.min() + 1, ys.min() + 1, xs.max() + 1, ys.max() + 1


def make_voc2007(top: Path) -> Path:
    root = top / "VOCdevkit" / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main", "SegmentationClass"):
        (root / sub).mkdir(parents=True)
    jpg = root / "JPEGImages"
    # 000001: 400x300 = 120,000 px, downscaled; a box painted red to follow
    (jpg / "000001.jpg").write_bytes(jpeg_bytes(red_box(noise(400, 300, 1), (101, 61, 260, 200)), quality=98))
    (root / "Annotations/000001.xml").write_text(voc_xml(400, 300, [("dog", 101, 61, 260, 200, 0, 1)]))
    # 000002: one good box, one sticking out, one with no extent, one wholly outside
    (jpg / "000002.jpg").write_bytes(jpeg_bytes(noise(120, 100, 2)))
    (root / "Annotations/000002.xml").write_text(voc_xml(120, 100, [
        ("cat", 10, 10, 50, 60, 1, 0), ("dog", 90, 20, 130, 70, 0, 0), ("cat", 40, 40, 30, 50, 0, 0),
        ("dog", 200, 150, 220, 170, 0, 0)]))
    (jpg / "000003.jpg").write_bytes(jpeg_bytes(noise(120, 100, 3)))
    (root / "Annotations/000003.xml").write_text("<annotation><object><name>cat</name>")
    (jpg / "000004.jpg").write_bytes(jpeg_bytes(noise(120, 100, 4)))
    (root / "Annotations/000004.xml").write_text(voc_xml(120, 100, [("cat", 5, 5, 40, 40, 0, 0)]))
    (jpg / "000005.jpg").write_bytes(jpeg_bytes(noise(120, 100, 5)))
    # 000006: stored on its side with EXIF orientation 6; the box is in the file's grid
    (jpg / "000006.jpg").write_bytes(with_exif_orientation(red_box(noise(160, 100, 6), (21, 11, 70, 40)), 6))
    (root / "Annotations/000006.xml").write_text(voc_xml(160, 100, [("cat", 21, 11, 70, 40, 0, 0)]))
    noise(120, 100, 7, "P").save(root / "SegmentationClass" / "000002.png")  # masks are not images to ingest
    lists = {"train": ["000001", "000006"], "val": ["000002", "000003"], "trainval": ["000001", "000002", "000003", "000006"],
             "test": ["000004"]}
    for name, ids in lists.items():
        (root / "ImageSets/Main" / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def test_voc2007_layout_splits_boxes_and_reports(tmp_path):
    make_voc2007(tmp_path / "download")
    result = run_ingest(ingest_settings(tmp_path, tmp_path / "download", min_pixels=30000, max_pixels=40000),
                        progress=False)
    store = result.store
    m = pd.read_parquet(store / "manifest.parquet").set_index("image_id")
    assert m.index.tolist() == ["000001", "000002", "000003", "000004", "000005", "000006"]
    assert m["split"].to_dict() == {"000001": "trainval", "000002": "trainval", "000003": "unlabeled",
                                    "000004": "test", "000005": "unlabeled", "000006": "trainval"}
    assert m.loc["000001", "source"] == f"{tmp_path}/download/VOCdevkit/VOC2007/JPEGImages/000001.jpg"
    assert (m.loc["000006", "width"], m.loc["000006", "height"]) == (100, 160)  # upright
    w1, h1 = m.loc["000001", ["width", "height"]]
    assert 30000 * 0.97 <= w1 * h1 <= 40000 * 1.03 and abs(w1 / h1 - 4 / 3) < 0.02

    ann = pd.read_parquet(store / "annotations.parquet")
    boxes = {i: g[["class", "xmin", "ymin", "xmax", "ymax"]].values.tolist() for i, g in ann.groupby("image_id")}
    assert boxes["000002"] == [["cat", 10, 10, 50, 60], ["dog", 90, 20, 120, 70]]  # second clipped to the image
    assert ann.set_index("image_id").loc["000002"]["difficult"].tolist() == [True, False]
    assert boxes["000004"] == [["cat", 5, 5, 40, 40]]
    assert "000003" not in boxes
    for image_id in ("000001", "000006"):  # the box still frames the red patch after resize / rotation
        got = red_bbox(store / "images" / f"{image_id}.jpg")
        assert np.abs(np.array(boxes[image_id][0][1:]) - np.array(got)).max() <= 2, (image_id, got)
    assert (store / "classes.txt").read_text() == "cat\ndog\n"

    xml = f"{tmp_path}/download/VOCdevkit/VOC2007/Annotations"
    report = [(e.source, e.kind, e.reason) for e in result.quarantined]
    assert (f"{xml}/000002.xml", "box outside the image",
            "object 2 (dog) box (90,20,130,70) sticks out of the 120x100 image; clipped") in report
    assert (f"{xml}/000002.xml", "zero-area box", "object 3 (cat) box (40,40,30,50) has zero area; skipped") in report
    assert (f"{xml}/000002.xml", "box outside the image",
            "object 4 (dog) box (200,150,220,170) lies outside the 120x100 image; skipped") in report
    malformed = [r for r in report if r[1] == "malformed XML"]
    assert len(malformed) == 1 and malformed[0][0] == f"{xml}/000003.xml" and "kept as unlabeled" in malformed[0][2]
    assert len(report) == 4
