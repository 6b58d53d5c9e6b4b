"""Detections in the PASCAL VOC results format, written and read.

One file per class, ``comp4_det_<split>_<class>.txt`` ("comp4": trained on
any data), one detection a line: ``image_id score xmin ymin xmax ymax`` with
the box in 1-based inclusive pixels. Any detector that writes these files can
be scored by ``ctx voc-eval``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ctx_core.detection.evaluate import ClassDetections
from ctx_core.errors import UserError

_NAME = re.compile(r"^comp(\d+)_det_(.+)\.txt$")


class ResultsFileError(UserError):
    """A results folder or file that cannot be read; the message names the file (and line)."""


def results_path(folder: Path, split: str, cls: str) -> Path:
    return Path(folder) / f"comp4_det_{split}_{cls}.txt"


def write_results(folder: Path, split: str, detections: Mapping[str, ClassDetections]) -> list[Path]:
    """One ``comp4_det_<split>_<class>.txt`` per class in ``detections`` (empty files for no detection)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for cls, d in detections.items():
        path = results_path(folder, split, cls)
        with open(path, "w") as f:
            for image_id, score, (x0, y0, x1, y1) in zip(d.image_ids, d.scores, d.boxes):
                f.write(f"{image_id} {score:.6f} {x0:.1f} {y0:.1f} {x1:.1f} {y1:.1f}\n")
        paths.append(path)
    return paths


def parse_results_file(path: Path) -> ClassDetections:
    """The detections of one results file; :class:`ResultsFileError` names the first malformed line."""
    ids, rows = [], []
    with open(path, errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                if len(parts) != 6:
                    raise ValueError
                values = [float(v) for v in parts[1:]]
                if not np.isfinite(values).all():
                    raise ValueError
            except ValueError:
                shown = line.strip()[:80]
                raise ResultsFileError(
                    f"{path}:{lineno}: {shown!r} is not 'image_id score xmin ymin xmax ymax' (6 fields, 5 finite numbers)"
                ) from None
            ids.append(parts[0])
            rows.append(values)
    arr = np.array(rows, dtype=np.float64).reshape(-1, 5)
    return ClassDetections(np.array(ids, dtype=object), arr[:, 0], arr[:, 1:])


def read_results(folder: Path, split: str, classes: Sequence[str], known: Sequence[str] = ()) -> tuple[dict[str, ClassDetections], list[str]]:
    """Results files of ``split`` in ``folder`` for ``classes``; returns (detections, notes).

    ``known``: further class names that are valid but not evaluated (in the
    dataset's list, without objects in this split); their files are noted and
    left out. Any other class name is an error, as is a folder without a file
    for ``split``. A class without a file, or with an empty file, gets no
    detections and a note.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ResultsFileError(f"--detections {folder} is not a folder")
    prefix = f"_det_{split}_"
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        m = _NAME.match(path.name)
        if not m or not m.group(2).startswith(f"{split}_"):
            continue
        cls = path.name[path.name.index(prefix) + len(prefix):-len(".txt")]
        if cls in found:
            raise ResultsFileError(f"--detections {folder}: two files for class {cls!r} ({found[cls].name}, {path.name}); keep one")
        found[cls] = path
    if not found:
        raise ResultsFileError(f"--detections {folder} has no results file comp4_det_{split}_<class>.txt for split {split!r}")
    unknown = sorted(set(found) - set(classes) - set(known))
    if unknown:
        raise ResultsFileError(
            f"--detections {folder}: unknown class name(s) {', '.join(unknown)} in file names; "
            f"classes of split {split!r}: {', '.join(classes)}"
        )
    notes = [f"{cls}: no object in split {split!r}; {found[cls].name} left out" for cls in sorted(set(found) & set(known) - set(classes))]
    detections = {}
    for cls in classes:
        if cls not in found:
            notes.append(f"{cls}: no results file; AP 0")
            continue
        detections[cls] = parse_results_file(found[cls])
        if len(detections[cls].scores) == 0:
            notes.append(f"{cls}: {found[cls].name} is empty; AP 0")
    return detections, notes
