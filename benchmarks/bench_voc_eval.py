"""VOC evaluation speed: ``ctx voc-eval`` on 5,000 images x 20 classes against
the devkit's per-detection Python loop, in one run.

A VOC root of ``--images`` annotation files (1-6 objects each, 20 classes,
some difficult) and one results file per class (each object found 1-2 times
with jitter, plus ``--false-per-image`` random false positives) are generated
in a temporary folder. Timed:

- ``ctx voc-eval`` end to end, in process: reading the XML annotations, the
  results files, and AP for every class;
- the AP computation alone, vectorised (``evaluate_detections``) against the
  devkit loop (``tests/detection/devkit_reference.py``) on the same data; both
  must give the same APs.

    .venv/bin/python benchmarks/bench_voc_eval.py [--images 5000] [--false-per-image 20]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ctx_core.cli import main as ctx_main  # noqa: E402
from ctx_core.detection.evaluate import evaluate_detections  # noqa: E402
from ctx_core.detection.results import read_results  # noqa: E402
from ctx_core.store.labelled import read_detection_split  # noqa: E402
from tests.detection.devkit_reference import devkit_ap  # noqa: E402

CLASSES = [f"class{k:02d}" for k in range(20)]


def make_dataset(root: Path, images: int, false_per_image: int, seed: int = 0) -> int:
    """Write the VOC root and results files under ``root``; returns the number of detections."""
    rng = np.random.default_rng(seed)
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "results").mkdir()
    lines: dict[str, list[str]] = {c: [] for c in CLASSES}
    ids = [f"{k:06d}" for k in range(images)]
    for image_id in ids:
        objs = []
        for _ in range(rng.integers(1, 7)):
            w, h = rng.integers(15, 120, 2)
            x, y = rng.integers(1, 500 - w), rng.integers(1, 375 - h)
            objs.append((CLASSES[rng.integers(20)], x, y, x + w, y + h, int(rng.random() < 0.1)))
        xml = "".join(f"<object><name>{c}</name><difficult>{d}</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
                      f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>" for c, x0, y0, x1, y1, d in objs)
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><size><width>500</width><height>375</height><depth>3</depth></size>{xml}</annotation>")
        for c, x0, y0, x1, y1, _ in objs:
            for _ in range(rng.integers(1, 3)):
                j = rng.normal(0, 6, 4)
                lines[c].append(f"{image_id} {rng.random():.4f} {x0 + j[0]:.1f} {y0 + j[1]:.1f} {x1 + j[2]:.1f} {y1 + j[3]:.1f}")
        for _ in range(false_per_image):
            w, h = rng.integers(15, 120, 2)
            x, y = rng.integers(1, 500 - w), rng.integers(1, 375 - h)
            lines[CLASSES[rng.integers(20)]].append(f"{image_id} {rng.random() * 0.6:.4f} {x} {y} {x + w} {y + h}")
    (root / "ImageSets" / "Main" / "test.txt").write_text("\n".join(ids) + "\n")
    for c, rows in lines.items():
        (root / "results" / f"comp4_det_test_{c}.txt").write_text("\n".join(rows) + "\n")
    return sum(len(r) for r in lines.values())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--false-per-image", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        n_dets = make_dataset(root, args.images, args.false_per_image)
        argv = ["voc-eval", "--root", str(root), "--split", "test", "--detections", str(root / "results")]
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()) as out:
            assert ctx_main(argv) == 0
        end_to_end = time.perf_counter() - t0
        cli_map = json.loads(out.getvalue())["mAP"]

        split = read_detection_split(root, "test")
        dets, _ = read_results(root / "results", "test", list(split.present_classes))
        t0 = time.perf_counter()
        ours = evaluate_detections(split, dets, list(split.present_classes)).ap
        vectorised = time.perf_counter() - t0
        t0 = time.perf_counter()
        reference = {}
        for c in split.present_classes:
            gt = {r.image_id: [(b, d) for n, b, d in zip(r.names, r.boxes, r.difficult) if n == c] for r in split.images}
            rows = list(zip(dets[c].image_ids, dets[c].scores, dets[c].boxes))
            reference[c] = devkit_ap(gt, rows)
        loop = time.perf_counter() - t0
    worst = max(abs(ours[c] - reference[c]) for c in ours)
    print(f"{args.images} images, {len(split.present_classes)} classes, {split.object_count()} objects, {n_dets} detections")
    print(f"  ctx voc-eval end to end:   {end_to_end:6.2f} s  (mAP {cli_map:.4f}; goal <= 5 s)")
    print(f"  AP, vectorised:            {vectorised:6.2f} s")
    print(f"  AP, devkit loop reference: {loop:6.2f} s  ({loop / vectorised:.0f}x slower; largest AP difference {worst:.1e})")


if __name__ == "__main__":
    main()
