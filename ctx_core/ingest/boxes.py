"""Box geometry for VOC annotations under EXIF rotation, clipping and resizing.

VOC boxes are 1-based and inclusive: ``xmin..xmax`` covers pixels
``xmin-1 .. xmax-1`` (0-based), i.e. the continuous interval
``[xmin-1, xmax]``. All maths here is on that continuous form.
"""

from __future__ import annotations

Box = tuple[float, float, float, float]


def to_continuous(xmin: float, ymin: float, xmax: float, ymax: float) -> Box:
    return xmin - 1, ymin - 1, xmax, ymax


def orient_box(box: Box, orientation: int, width: int, height: int) -> Box:
    """``box`` in a raw ``width`` x ``height`` file mapped to the grid after
    ``ImageOps.exif_transpose`` for EXIF ``orientation`` 1-8."""
    x0, y0, x1, y1 = box
    w, h = width, height
    return {
        1: (x0, y0, x1, y1),
        2: (w - x1, y0, w - x0, y1),  # mirrored horizontally
        3: (w - x1, h - y1, w - x0, h - y0),  # rotated 180
        4: (x0, h - y1, x1, h - y0),  # mirrored vertically
        5: (y0, x0, y1, x1),  # transposed
        6: (h - y1, x0, h - y0, x1),  # rotated 90 clockwise for display
        7: (h - y1, w - x1, h - y0, w - x0),  # transversed
        8: (y0, w - x1, y1, w - x0),  # rotated 90 counter-clockwise for display
    }.get(orientation, box)


def clip_box(box: Box, width: int, height: int) -> Box | None:
    """``box`` clipped to ``[0, width] x [0, height]``; None when nothing of it is inside."""
    x0, y0, x1, y1 = max(box[0], 0), max(box[1], 0), min(box[2], width), min(box[3], height)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def scale_to_voc(box: Box, sx: float, sy: float, width: int, height: int) -> tuple[int, int, int, int]:
    """``box`` scaled by ``(sx, sy)`` into a ``width`` x ``height`` image, as VOC
    ``(xmin, ymin, xmax, ymax)``: integers, at least one pixel, inside the image."""
    x0 = min(max(round(box[0] * sx), 0), width - 1)
    y0 = min(max(round(box[1] * sy), 0), height - 1)
    x1 = min(max(round(box[2] * sx), x0 + 1), width)
    y1 = min(max(round(box[3] * sy), y0 + 1), height)
    return x0 + 1, y0 + 1, x1, y1
