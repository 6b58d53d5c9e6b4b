"""Pictures people would rather look at than read: montages and bar charts."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw

PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
]


def boxes_montage(
    items: Sequence[tuple[Image.Image, Sequence[tuple[str, tuple[int, int, int, int], bool]]]],
    class_names: Sequence[str],
    cols: int = 4,
    tile: int = 192,
) -> Image.Image:
    """Grid of images with their boxes drawn and labelled.

    ``items``: (image, [(class name, (x0, y0, x1, y1) 0-based end-exclusive, difficult)]).
    Difficult objects are drawn with a thin outline.
    """
    rows = max(1, -(-len(items) // cols))
    sheet = Image.new("RGB", (cols * tile, rows * tile), (255, 255, 255))
    for k, (img, objects) in enumerate(items):
        scale = tile / max(img.size)
        thumb = img.convert("RGB").resize((round(img.width * scale), round(img.height * scale)))
        draw = ImageDraw.Draw(thumb)
        for name, (x0, y0, x1, y1), difficult in objects:
            color = PALETTE[class_names.index(name) % len(PALETTE)] if name in class_names else (255, 255, 255)
            # end-exclusive -> inclusive; a box thinner than a pixel after scaling stays one pixel
            box = [x0 * scale, y0 * scale, max(x0 * scale, x1 * scale - 1), max(y0 * scale, y1 * scale - 1)]
            draw.rectangle(box, outline=color, width=1 if difficult else 2)
            draw.text((box[0] + 2, box[1] + 1), name, fill=color)
        sheet.paste(thumb, ((k % cols) * tile, (k // cols) * tile))
    return sheet


def bar_chart(counts: dict[str, float], title: str, ylabel: str, path: Path) -> Path:
    """A bar chart of ``counts`` saved as PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(counts) + 1), 3.2), dpi=100)
    ax.bar(list(counts), list(counts.values()), color="#3b75af")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
