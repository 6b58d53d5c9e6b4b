"""Montages of image patches: one row per query or cluster, crops side by side."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw


@dataclass(frozen=True)
class Tile:
    """A crop of ``image`` at ``box`` (x0, y0, x1, y1; 0-based, end exclusive), with a caption."""

    image: Path
    box: tuple[int, int, int, int]
    caption: str = ""
    frame: tuple[int, int, int] | None = None


@lru_cache(maxsize=64)
def _open(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def patch_rows(
    rows: Sequence[tuple[str, Sequence[Tile | None]]], path: Path, tile: int = 64, label_width: int = 150
) -> Path:
    """Save a PNG with one row per ``(label, tiles)``; a ``None`` tile leaves a gap."""
    cols = max((len(t) for _, t in rows), default=1)
    cell = tile + 4
    sheet = Image.new("RGB", (label_width + cols * cell, max(1, len(rows)) * (cell + 12)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (label, tiles) in enumerate(rows):
        top = r * (cell + 12)
        draw.multiline_text((4, top + 4), label, fill=(0, 0, 0))
        for c, t in enumerate(tiles):
            if t is None:
                continue
            left = label_width + c * cell
            crop = _open(Path(t.image)).crop(t.box).resize((tile, tile))
            if t.frame:
                draw.rectangle([left, top, left + tile + 3, top + tile + 3], fill=t.frame)
            sheet.paste(crop, (left + 2, top + 2))
            draw.text((left + 2, top + cell), t.caption[:12], fill=(60, 60, 60))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
