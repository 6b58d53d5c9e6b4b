"""Reading a PASCAL VOC root: image ids, splits, classes and annotation XML.

Works for VOC2007/VOC2012 (``train``/``val``/``trainval``/``test`` lists) and
for the synthetic benchmark (``unlabeled``/``trainval``/``test`` lists plus
``classes.txt``). Boxes stay as written: 1-based, inclusive pixel coordinates.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("unlabeled", "trainval", "test")
# Which list file puts an image in which stored split; a later split wins, so
# an image listed in both trainval and test is held out as test.
_LIST_SPLIT = {"unlabeled": "unlabeled", "train": "trainval", "val": "trainval", "trainval": "trainval", "test": "test"}


class AnnotationError(ValueError):
    """An annotation file that cannot be parsed; the message is one line."""


@dataclass(frozen=True)
class VocObject:
    """One ``<object>``: box in 1-based inclusive pixels of the annotated file."""

    name: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    difficult: bool
    truncated: bool


def is_voc_root(folder: Path) -> bool:
    """A folder with ``JPEGImages/`` and ``Annotations/`` or ``ImageSets/``."""
    return (folder / "JPEGImages").is_dir() and ((folder / "Annotations").is_dir() or (folder / "ImageSets").is_dir())


def read_splits(root: Path) -> dict[str, str]:
    """Image id -> ``unlabeled``/``trainval``/``test`` from ``ImageSets/Main``; unlisted ids are absent."""
    main = root / "ImageSets" / "Main"
    split_of: dict[str, str] = {}
    for split in SPLITS:
        for name, target in _LIST_SPLIT.items():
            if target != split:
                continue
            path = main / f"{name}.txt"
            if path.is_file():
                for line in path.read_text(errors="replace").splitlines():
                    if line.strip():
                        split_of[line.split()[0]] = split
    return split_of


def read_classes(root: Path) -> list[str] | None:
    """``ImageSets/Main/classes.txt`` (written by ``ctx synth``), or None when absent."""
    path = root / "ImageSets" / "Main" / "classes.txt"
    if not path.is_file():
        return None
    return [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]


def _number(obj: ET.Element, path: str, default: float | None = None) -> float:
    text = obj.findtext(path)
    if text is None or not text.strip():
        if default is not None:
            return default
        raise AnnotationError(f"<{path}> missing")
    try:
        return float(text)
    except ValueError:
        raise AnnotationError(f"<{path}> = {text.strip()!r} is not a number") from None


def parse_annotation(path: Path) -> list[VocObject]:
    """The objects of one VOC XML file; :class:`AnnotationError` when it is malformed."""
    try:
        tree = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise AnnotationError(f"not well-formed XML ({exc})") from None
    except OSError as exc:
        raise AnnotationError(f"cannot read ({exc.strerror})") from None
    if tree.tag != "annotation":
        raise AnnotationError(f"root element is <{tree.tag}>, expected <annotation>")
    objects = []
    for k, obj in enumerate(tree.findall("object"), 1):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise AnnotationError(f"object {k} has no <name>")
        if obj.find("bndbox") is None:
            raise AnnotationError(f"object {k} ({name}) has no <bndbox>")
        try:
            coords = [_number(obj, f"bndbox/{c}") for c in ("xmin", "ymin", "xmax", "ymax")]
            difficult = _number(obj, "difficult", 0.0) != 0
            truncated = _number(obj, "truncated", 0.0) != 0
        except AnnotationError as exc:
            raise AnnotationError(f"object {k} ({name}): {exc}") from None
        objects.append(VocObject(name, *coords, difficult=difficult, truncated=truncated))
    return objects
