"""Textured backgrounds: multi-scale noise, gradients, stripes and clutter.

Flat backgrounds would let the pretext task be solved by edge continuation or
by colour alone; textures at several scales take that shortcut away.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

OUTDOOR_SHARE = 0.7  # share of scenes with sky over ground; the rest are abstract textures


def _noise(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Coloured value noise summed over octaves, float32 HxWx3 in [0, 1]."""
    out = np.zeros((h, w, 3), np.float32)
    weight_sum = 0.0
    for cells, weight in ((3, 1.0), (8, 0.5), (24, 0.25)):
        small = (rng.random((cells, cells, 3)) * 255).astype(np.uint8)
        big = np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR), np.float32) / 255
        out += weight * big
        weight_sum += weight
    out /= weight_sum
    tint = rng.random(3).astype(np.float32)
    mix = rng.uniform(0.3, 0.8)
    return (1 - mix) * out + mix * tint * out * 1.6


def _gradient(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    t = xs * np.cos(angle) + ys * np.sin(angle)
    t = (t - t.min()) / max(float(np.ptp(t)), 1.0)
    c0, c1 = rng.random(3).astype(np.float32), rng.random(3).astype(np.float32)
    return c0 + t[..., None] * (c1 - c0)


def _stripes(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(4, max(6.0, min(w, h) / 3))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    t = 0.5 + 0.5 * np.sin(2 * np.pi * (xs * np.cos(angle) + ys * np.sin(angle)) / period)
    c0, c1 = rng.random(3).astype(np.float32), rng.random(3).astype(np.float32)
    return c0 + t[..., None] * (c1 - c0)


def _clutter(img: Image.Image, rng: np.random.Generator, count: int) -> None:
    """Small random shapes that belong to no class (distractors)."""
    w, h = img.size
    d = ImageDraw.Draw(img)
    for _ in range(count):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        s = rng.uniform(0.02, 0.08) * max(w, h)
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = rng.integers(4)
        if kind == 0:
            d.ellipse([x - s, y - s, x + s, y + s], fill=color)
        elif kind == 1:
            d.rectangle([x - s, y - s * 0.6, x + s, y + s * 0.6], fill=color)
        elif kind == 2:
            x1, y1 = x + rng.uniform(-3, 3) * s, y + rng.uniform(-3, 3) * s
            d.line([(x, y), (x1, y1)], fill=color, width=int(rng.integers(1, 4)))
        else:
            d.arc([x - s, y - s, x + s, y + s], float(rng.uniform(0, 360)), float(rng.uniform(0, 360)), fill=color, width=2)


def _outdoor(rng: np.random.Generator, w: int, h: int) -> tuple[np.ndarray, int]:
    """Sky over ground, as in most photographs: a smooth sky brightening towards
    a horizon, over a textured ground whose grain grows towards the bottom
    (perspective). Returns the float image and the horizon row."""
    horizon = int(rng.uniform(0.3, 0.6) * h)
    ys = np.arange(h, dtype=np.float32)[:, None, None] / max(h - 1, 1)
    sky_top = np.array(colorsys_hsv(rng.uniform(0.52, 0.66), rng.uniform(0.3, 0.8), rng.uniform(0.5, 0.9)))
    sky = sky_top + (1 - sky_top) * 0.6 * ys / max(horizon / h, 1e-3)
    ground_col = np.array(colorsys_hsv(rng.choice([0.08, 0.12, 0.25, 0.33, 0.58]), rng.uniform(0.3, 0.8),
                                       rng.uniform(0.3, 0.7)))
    grain = np.zeros((h, w), np.float32)
    for cells, weight in ((6, 0.5), (16, 0.3), (48, 0.2)):
        small = (rng.random((cells, cells)) * 255).astype(np.uint8)
        grain += weight * np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR), np.float32) / 255
    depth = np.clip((ys[..., 0] - horizon / h) / max(1 - horizon / h, 1e-3), 0, 1)
    # furrows crowd together towards the horizon, as receding parallel lines do
    furrows = 0.5 + 0.5 * np.sin(np.pi * np.clip(np.arange(h)[:, None] - horizon, 0, None) ** 0.6)
    texture = (0.65 + 0.5 * (grain - 0.5) * (0.4 + depth)) * (0.85 + 0.15 * furrows * depth)
    ground = ground_col[None, None, :] * (0.6 + 0.6 * depth[..., None]) * texture[..., None]
    base = np.where((np.arange(h) < horizon)[:, None, None], np.broadcast_to(sky, (h, w, 3)), ground)
    return base.astype(np.float32), horizon


def colorsys_hsv(hue: float, sat: float, val: float) -> tuple[float, float, float]:
    import colorsys

    return colorsys.hsv_to_rgb(hue, sat, val)


def render_background(rng: np.random.Generator, w: int, h: int) -> tuple[Image.Image, int | None]:
    """An RGB ``w`` x ``h`` background and its horizon row (None for an abstract one).

    Outdoor scenes (sky over textured ground) are most common; the rest mix
    noise or a gradient with stripes. Clutter shapes are scattered over both.
    """
    horizon = None
    if rng.random() < OUTDOOR_SHARE:
        base, horizon = _outdoor(rng, w, h)
    else:
        base = _noise(rng, w, h) if rng.random() < 0.6 else _gradient(rng, w, h)
        if rng.random() < 0.4:
            alpha = rng.uniform(0.2, 0.5)
            base = (1 - alpha) * base + alpha * _stripes(rng, w, h)
    img = Image.fromarray((np.clip(base, 0, 1) * 255).astype(np.uint8), "RGB")
    if rng.random() < 0.75:
        _clutter(img, rng, int(rng.integers(5, 25)))
    return img, horizon
