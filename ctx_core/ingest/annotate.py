"""VOC objects of one image mapped onto its stored pixels, with every box not
taken as written reported."""

from __future__ import annotations

from typing import Any

from ctx_core.ingest import quarantine as q
from ctx_core.ingest.boxes import clip_box, orient_box, scale_to_voc, to_continuous
from ctx_core.ingest.normalise import Normalised
from ctx_core.ingest.quarantine import Rejected
from ctx_core.store.voc import VocObject


def _fmt(v: float) -> str:
    return f"{v:g}"


def boxes_for_image(
    objects: list[VocObject], image: Normalised, classes: list[str], xml_source: str
) -> tuple[list[dict[str, Any]], list[Rejected]]:
    """Rows for ``annotations.parquet`` (without ``image_id``) and the boxes refused or changed.

    Boxes are checked in the file's pixel grid (``raw_width`` x ``raw_height``):
    a box with no extent is skipped, one wholly outside the image is skipped,
    one sticking out is clipped (and reported). Then it follows the EXIF
    rotation and the resize into the stored grid. With a ``classes`` list
    (``classes.txt``), objects of other classes are skipped.
    """
    rows, refused = [], []
    w, h = image.raw_width, image.raw_height
    sx, sy = image.width / image.orig_width, image.height / image.orig_height
    for k, o in enumerate(objects, 1):
        what = f"object {k} ({o.name}) box ({_fmt(o.xmin)},{_fmt(o.ymin)},{_fmt(o.xmax)},{_fmt(o.ymax)})"
        if classes and o.name not in classes:
            refused.append(Rejected(xml_source, q.UNKNOWN_CLASS, f"{what}: class not in classes.txt; skipped"))
            continue
        box = to_continuous(o.xmin, o.ymin, o.xmax, o.ymax)
        if box[2] <= box[0] or box[3] <= box[1]:
            refused.append(Rejected(xml_source, q.ZERO_AREA_BOX, f"{what} has zero area; skipped"))
            continue
        clipped = clip_box(box, w, h)
        if clipped is None:
            refused.append(Rejected(xml_source, q.BOX_OUTSIDE, f"{what} lies outside the {w}x{h} image; skipped"))
            continue
        if clipped != box:
            refused.append(Rejected(xml_source, q.BOX_OUTSIDE, f"{what} sticks out of the {w}x{h} image; clipped"))
        upright = orient_box(clipped, image.orientation, w, h)
        xmin, ymin, xmax, ymax = scale_to_voc(upright, sx, sy, image.width, image.height)
        rows.append({"class": o.name, "xmin": xmin, "ymin": ymin, "xmax": xmax, "ymax": ymax,
                     "difficult": o.difficult, "truncated": o.truncated})
    return rows, refused
