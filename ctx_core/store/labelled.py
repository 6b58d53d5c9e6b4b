"""Labelled images for detection: one split of a VOC root or of the ingest store.

Two layouts are read into the same :class:`DetectionSplit`:

- a PASCAL VOC root (VOC2007, VOC2012 or ``ctx synth`` output):
  ``ImageSets/Main/<split>.txt`` lists the image ids, ``Annotations/<id>.xml``
  holds the objects, ``JPEGImages/<id>.jpg`` the pixels;
- the ingest store (``ctx ingest``): ``manifest.parquet`` (``split`` column),
  ``annotations.parquet``, ``images/<id>.jpg``.

Both answer to ``train`` and ``val`` when they only have ``trainval``: the
split is derived from each image's sha256 (``layout.in_val``).

The class list is the dataset's own: ``classes.txt`` (store root or
``ImageSets/Main/``) when present, else the sorted names found in the split's
annotations. Boxes stay in VOC pixels: 1-based, inclusive. A box reaching out
of its image is clipped to it and a box with no area inside the image is
skipped; both are counted in ``notes``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ctx_core.errors import UserError
from ctx_core.store.layout import (
    image_path, is_store, read_annotations, read_manifest, read_store_classes, split_mask, store_splits, voc_split_ids,
    voc_splits,
)
from ctx_core.store.voc import AnnotationError, VocObject, parse_annotation, read_classes


class DatasetError(UserError):
    """A detection dataset that cannot be read; the message names the file or split."""


@dataclass(frozen=True)
class ImageRecord:
    """One labelled image. ``boxes``: float64 (K, 4) xmin, ymin, xmax, ymax in
    1-based inclusive pixels; ``names``: K class names; ``difficult``/``truncated``: bool (K,)."""

    image_id: str
    path: Path
    width: int
    height: int
    names: tuple[str, ...]
    boxes: np.ndarray
    difficult: np.ndarray
    truncated: np.ndarray


@dataclass(frozen=True)
class DetectionSplit:
    """The images of one split, the dataset's class list and what was fixed while reading."""

    root: Path
    split: str
    classes: tuple[str, ...]
    images: tuple[ImageRecord, ...]
    notes: tuple[str, ...] = ()

    @property
    def present_classes(self) -> tuple[str, ...]:
        """Classes with at least one object in this split, in dataset order."""
        found = {n for r in self.images for n in r.names}
        return tuple(c for c in self.classes if c in found)

    def object_count(self) -> int:
        return sum(len(r.names) for r in self.images)


def sanitize_boxes(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, int, int]:
    """Clip VOC boxes (K, 4) to ``1..width`` x ``1..height``; returns (keep mask (K,), clipped count, skipped count).

    ``boxes`` is changed in place. A box is skipped when nothing of it lies
    inside the image (``xmax < xmin`` or ``ymax < ymin`` after clipping).
    """
    if len(boxes) == 0:
        return np.zeros(0, bool), 0, 0
    before = boxes.copy()
    np.clip(boxes[:, 0::2], 1, width, out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], 1, height, out=boxes[:, 1::2])
    outside = (before[:, 2] < 1) | (before[:, 0] > width) | (before[:, 3] < 1) | (before[:, 1] > height)
    keep = (boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1]) & ~outside
    changed = np.any(before != boxes, axis=1) & keep
    return keep, int(changed.sum()), int((~keep).sum())


def _record(image_id: str, path: Path, width: int, height: int, objects: list[VocObject], tally: dict[str, list[str]]) -> ImageRecord:
    boxes = np.array([[o.xmin, o.ymin, o.xmax, o.ymax] for o in objects], dtype=np.float64).reshape(-1, 4)
    keep, clipped, skipped = sanitize_boxes(boxes, width, height)
    if clipped:
        tally["clipped"].append(image_id)
    if skipped:
        tally["skipped"].append(image_id)
    kept = [o for o, k in zip(objects, keep) if k]
    return ImageRecord(
        image_id=image_id, path=path, width=width, height=height,
        names=tuple(o.name for o in kept), boxes=boxes[keep],
        difficult=np.array([o.difficult for o in kept], dtype=bool),
        truncated=np.array([o.truncated for o in kept], dtype=bool),
    )


def _notes(tally: dict[str, list[str]]) -> tuple[str, ...]:
    out = []
    for what, ids in tally.items():
        if ids:
            shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
            reason = "reaching out of the image were clipped" if what == "clipped" else "with no area inside the image were skipped"
            out.append(f"boxes {reason} in {len(ids)} image(s): {shown}")
    return tuple(out)


def _xml_size(path: Path) -> tuple[int, int] | None:
    """``<size><width>/<height>`` of a VOC XML, or None when absent or zero."""
    try:
        size = ET.parse(path).getroot().find("size")
        w, h = int(float(size.findtext("width"))), int(float(size.findtext("height")))
    except (AttributeError, TypeError, ValueError, ET.ParseError, OSError):
        return None
    return (w, h) if w > 0 and h > 0 else None


def _read_voc(root: Path, split: str) -> DetectionSplit:
    ids = voc_split_ids(root, split)
    if ids is None:
        raise DatasetError(f"VOC root {root} has no split {split!r} (ImageSets/Main/{split}.txt); "
                           f"splits there: {', '.join(voc_splits(root)) or 'none'}")
    tally: dict[str, list[str]] = {"clipped": [], "skipped": []}
    records = []
    for image_id in ids:
        xml = root / "Annotations" / f"{image_id}.xml"
        image = root / "JPEGImages" / f"{image_id}.jpg"
        try:
            objects = parse_annotation(xml)
        except AnnotationError as exc:
            raise DatasetError(f"annotation {xml}: {exc}") from None
        size = _xml_size(xml)
        if size is None:
            try:
                with Image.open(image) as im:
                    size = im.size
            except OSError:
                raise DatasetError(f"annotation {xml} gives no image size and {image} cannot be read") from None
        records.append(_record(image_id, image, size[0], size[1], objects, tally))
    classes = read_classes(root) or sorted({n for r in records for n in r.names})
    return DetectionSplit(root, split, tuple(classes), tuple(records), _notes(tally))


def _read_store(root: Path, split: str) -> DetectionSplit:
    manifest = read_manifest(root, ["image_id", "width", "height", "split", "sha256"])
    rows = manifest[split_mask(manifest, [split])].sort_values("image_id")
    if rows.empty:
        raise DatasetError(f"store {root} has no image in split {split!r}; it has {store_splits(manifest)}")
    ann = read_annotations(root)
    by_image = {k: g for k, g in ann[ann["image_id"].isin(set(rows["image_id"]))].groupby("image_id", sort=False)}
    tally: dict[str, list[str]] = {"clipped": [], "skipped": []}
    records = []
    for image_id, w, h in zip(rows["image_id"], rows["width"], rows["height"]):
        g = by_image.get(image_id)
        objects = [] if g is None else [
            VocObject(str(n), float(x0), float(y0), float(x1), float(y1), bool(d), bool(t))
            for n, x0, y0, x1, y1, d, t in zip(g["class"], g["xmin"], g["ymin"], g["xmax"], g["ymax"], g["difficult"], g["truncated"])
        ]
        records.append(_record(str(image_id), image_path(root, str(image_id)), int(w), int(h), objects, tally))
    classes = read_store_classes(root) or sorted({n for r in records for n in r.names})
    return DetectionSplit(root, split, tuple(classes), tuple(records), _notes(tally))


def read_detection_split(root: Path, split: str) -> DetectionSplit:
    """One split of an ingest store (``manifest.parquet``) or a VOC root (``ImageSets/Main``)."""
    root = Path(root)
    if is_store(root):
        return _read_store(root, split)
    if (root / "Annotations").is_dir() or (root / "ImageSets").is_dir():
        return _read_voc(root, split)
    if not root.exists():
        raise DatasetError(f"dataset {root} does not exist; expected an ingest store (run `ctx ingest`) or a VOC root")
    raise DatasetError(f"dataset {root} is neither an ingest store (manifest.parquet) nor a VOC root (Annotations/, ImageSets/Main/)")
