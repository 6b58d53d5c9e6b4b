"""Procedurally drawn object classes for the synthetic benchmark.

Each class is an object made of parts in a consistent layout (eyes above a
mouth, wheels under a body, a roof over walls), so that predicting where one
patch sits relative to another has structure to learn and a detector has
objects to find. A drawer paints one instance on a transparent RGBA canvas of
the requested size; the scene composer places, scales, flips and occludes it.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

RGBA = tuple[int, int, int, int]


def _color(rng: np.random.Generator, hue: float | None = None, sat=(0.4, 0.9), val=(0.35, 0.95)) -> RGBA:
    """A random opaque colour; ``hue`` (0-1) pins the hue up to a small jitter."""
    h = rng.random() if hue is None else (hue + rng.uniform(-0.04, 0.04)) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, rng.uniform(*sat), rng.uniform(*val))
    return int(r * 255), int(g * 255), int(b * 255), 255


def _dark(c: RGBA, f: float = 0.5) -> RGBA:
    return int(c[0] * f), int(c[1] * f), int(c[2] * f), 255


BLACK: RGBA = (20, 20, 20, 255)
WHITE: RGBA = (240, 240, 240, 255)


def _animal(d: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> None:
    fur = _color(rng, hue=rng.choice([0.07, 0.1, 0.0, 0.6]), sat=(0.2, 0.7))
    ear_h = 0.28 * h
    d.polygon([(0.08 * w, ear_h + 0.1 * h), (0.18 * w, 0), (0.42 * w, 0.2 * h)], fill=_dark(fur, 0.7))
    d.polygon([(0.92 * w, ear_h + 0.1 * h), (0.82 * w, 0), (0.58 * w, 0.2 * h)], fill=_dark(fur, 0.7))
    d.ellipse([0, 0.15 * h, w - 1, h - 1], fill=fur)
    eye = _color(rng, hue=rng.choice([0.3, 0.55, 0.12]), val=(0.6, 1.0))
    for cx in (0.32, 0.68):
        d.ellipse([(cx - 0.11) * w, 0.35 * h, (cx + 0.11) * w, 0.55 * h], fill=WHITE)
        d.ellipse([(cx - 0.06) * w, 0.39 * h, (cx + 0.06) * w, 0.52 * h], fill=eye)
        d.ellipse([(cx - 0.025) * w, 0.42 * h, (cx + 0.025) * w, 0.49 * h], fill=BLACK)
    d.polygon([(0.44 * w, 0.62 * h), (0.56 * w, 0.62 * h), (0.5 * w, 0.7 * h)], fill=(200, 90, 110, 255))
    d.arc([0.32 * w, 0.62 * h, 0.68 * w, 0.86 * h], 20, 160, fill=BLACK, width=max(1, w // 30))


def _car(d: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> None:
    body = _color(rng)
    glass = (150, 200, 230, 255)
    d.polygon([(0.22 * w, 0.45 * h), (0.32 * w, 0.08 * h), (0.7 * w, 0.08 * h), (0.84 * w, 0.45 * h)], fill=body)
    d.polygon([(0.3 * w, 0.42 * h), (0.36 * w, 0.15 * h), (0.5 * w, 0.15 * h), (0.5 * w, 0.42 * h)], fill=glass)
    d.polygon([(0.54 * w, 0.42 * h), (0.54 * w, 0.15 * h), (0.67 * w, 0.15 * h), (0.76 * w, 0.42 * h)], fill=glass)
    d.rounded_rectangle([0, 0.4 * h, w - 1, 0.8 * h], radius=max(1, int(0.08 * h)), fill=body)
    d.rectangle([0.9 * w, 0.48 * h, w - 1, 0.58 * h], fill=(250, 240, 150, 255))
    r = 0.2 * h
    for cx in (0.22 * w, 0.78 * w):
        d.ellipse([cx - r, h - 1 - 2 * r, cx + r, h - 1], fill=BLACK)
        d.ellipse([cx - 0.45 * r, h - 1 - 1.45 * r, cx + 0.45 * r, h - 1 - 0.55 * r], fill=(160, 160, 160, 255))


def _house(d: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> None:
    wall = _color(rng, sat=(0.1, 0.5), val=(0.6, 0.95))
    roof = _color(rng, hue=rng.choice([0.0, 0.05, 0.6]), val=(0.3, 0.6))
    d.rectangle([0.08 * w, 0.42 * h, 0.92 * w, h - 1], fill=wall)
    d.polygon([(0, 0.45 * h), (0.5 * w, 0), (w - 1, 0.45 * h)], fill=roof)
    d.rectangle([0.42 * w, 0.68 * h, 0.58 * w, h - 1], fill=_dark(wall, 0.4))
    for x0 in (0.16, 0.66):
        d.rectangle([x0 * w, 0.54 * h, (x0 + 0.18) * w, 0.72 * h], fill=(170, 210, 240, 255))
        d.line([((x0 + 0.09) * w, 0.54 * h), ((x0 + 0.09) * w, 0.72 * h)], fill=WHITE, width=max(1, w // 40))
        d.line([(x0 * w, 0.63 * h), ((x0 + 0.18) * w, 0.63 * h)], fill=WHITE, width=max(1, w // 40))


def _tree(d: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> None:
    leaves = _color(rng, hue=rng.uniform(0.22, 0.38), val=(0.3, 0.8))
    d.rectangle([0.42 * w, 0.6 * h, 0.58 * w, h - 1], fill=(110, 70, 40, 255))
    if rng.random() < 0.5:
        for y0, half in ((0.0, 0.3), (0.18, 0.4), (0.36, 0.5)):
            d.polygon([(0.5 * w, y0 * h), ((0.5 - half) * w, (y0 + 0.32) * h), ((0.5 + half) * w, (y0 + 0.32) * h)], fill=leaves)
    else:
        for cx, cy, r in ((0.5, 0.25, 0.25), (0.28, 0.42, 0.22), (0.72, 0.42, 0.22), (0.5, 0.5, 0.22)):
            d.ellipse([(cx - r) * w * 1.0, (cy - r * 0.9) * h, (cx + r) * w, (cy + r * 0.9) * h], fill=leaves)


def _boat(d: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> None:
    hull = _color(rng, val=(0.3, 0.8))
    sail = _color(rng, sat=(0.0, 0.3), val=(0.85, 1.0))
    d.line([(0.5 * w, 0.02 * h), (0.5 * w, 0.72 * h)], fill=(90, 60, 40, 255), width=max(1, w // 25))
    d.polygon([(0.53 * w, 0.06 * h), (0.53 * w, 0.66 * h), (0.92 * w, 0.66 * h)], fill=sail)
    d.polygon([(0.47 * w, 0.18 * h), (0.47 * w, 0.66 * h), (0.18 * w, 0.66 * h)], fill=_dark(sail, 0.85))
    d.polygon([(0.5 * w, 0.02 * h), (0.5 * w, 0.1 * h), (0.64 * w, 0.06 * h)], fill=(220, 40, 40, 255))
    d.polygon([(0, 0.72 * h), (w - 1, 0.72 * h), (0.82 * w, h - 1), (0.15 * w, h - 1)], fill=hull)


def _person(d: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> None:
    skin = _color(rng, hue=0.07, sat=(0.25, 0.6), val=(0.35, 0.95))
    shirt, pants = _color(rng), _color(rng, val=(0.2, 0.6))
    lw = max(2, int(0.16 * w))
    d.line([(0.42 * w, 0.62 * h), (0.3 * w, h - 1)], fill=pants, width=lw)
    d.line([(0.58 * w, 0.62 * h), (0.7 * w, h - 1)], fill=pants, width=lw)
    d.line([(0.3 * w, 0.28 * h), (0.04 * w, 0.55 * h)], fill=shirt, width=lw)
    d.line([(0.7 * w, 0.28 * h), (0.96 * w, 0.55 * h)], fill=shirt, width=lw)
    d.rounded_rectangle([0.24 * w, 0.22 * h, 0.76 * w, 0.64 * h], radius=max(1, int(0.08 * w)), fill=shirt)
    d.ellipse([0.28 * w, 0.0, 0.72 * w, 0.2 * h], fill=skin)
    d.chord([0.28 * w, 0.0, 0.72 * w, 0.14 * h], 180, 360, fill=_color(rng, val=(0.1, 0.5)))


def _bicycle(d: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> None:
    frame = _color(rng)
    r = 0.28 * w
    lw = max(1, int(0.04 * h))
    for cx in (r, w - 1 - r):
        d.ellipse([cx - r, h - 1 - 2 * r, cx + r, h - 1], outline=BLACK, width=max(2, int(0.06 * h)))
    hub_y = h - 1 - r
    pedal = (0.48 * w, hub_y)
    seat, head = (0.4 * w, 0.3 * h), (0.7 * w, 0.28 * h)
    d.line([(r, hub_y), pedal, seat, (r, hub_y)], fill=frame, width=lw)
    d.line([pedal, head, seat], fill=frame, width=lw)
    d.line([head, (w - 1 - r, hub_y)], fill=frame, width=lw)
    d.line([(0.32 * w, 0.22 * h), (0.48 * w, 0.22 * h)], fill=BLACK, width=max(2, int(0.07 * h)))
    d.line([head, (0.74 * w, 0.05 * h), (0.84 * w, 0.05 * h)], fill=BLACK, width=lw)


def _fish(d: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> None:
    body = _color(rng, sat=(0.6, 1.0), val=(0.6, 1.0))
    fin = _dark(body, 0.7)
    d.polygon([(0.0, 0.1 * h), (0.28 * w, 0.5 * h), (0.0, 0.9 * h)], fill=fin)
    d.polygon([(0.45 * w, 0.25 * h), (0.6 * w, 0.0), (0.7 * w, 0.25 * h)], fill=fin)
    d.ellipse([0.18 * w, 0.15 * h, w - 1, 0.85 * h], fill=body)
    for sx in (0.42, 0.55):
        d.line([(sx * w, 0.2 * h), (sx * w, 0.8 * h)], fill=WHITE, width=max(1, int(0.05 * w)))
    d.ellipse([0.78 * w, 0.33 * h, 0.88 * w, 0.5 * h], fill=WHITE)
    d.ellipse([0.81 * w, 0.37 * h, 0.86 * w, 0.46 * h], fill=BLACK)


def _flower(d: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> None:
    petal = _color(rng, hue=rng.choice([0.0, 0.15, 0.8, 0.9, 0.6]), sat=(0.5, 1.0), val=(0.7, 1.0))
    green = _color(rng, hue=0.3, val=(0.3, 0.6))
    d.line([(0.5 * w, 0.4 * h), (0.5 * w, h - 1)], fill=green, width=max(2, int(0.08 * w)))
    d.ellipse([0.5 * w, 0.62 * h, 0.95 * w, 0.74 * h], fill=green)
    cx, cy, r = 0.5 * w, 0.28 * h, 0.16 * min(w, h / 0.6)
    for k in range(6):
        a = k * np.pi / 3
        px, py = cx + 1.7 * r * np.cos(a), cy + 1.7 * r * np.sin(a)
        d.ellipse([px - r, py - r, px + r, py + r], fill=petal)
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(240, 200, 40, 255))


def _tvmonitor(d: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> None:
    case = _color(rng, sat=(0.0, 0.2), val=(0.1, 0.5))
    d.polygon([(0.35 * w, h - 1), (0.65 * w, h - 1), (0.56 * w, 0.8 * h), (0.44 * w, 0.8 * h)], fill=case)
    d.rectangle([0, 0, w - 1, 0.82 * h], fill=case)
    screen = _color(rng, hue=rng.uniform(0.5, 0.7), sat=(0.3, 0.8), val=(0.5, 1.0))
    d.rectangle([0.07 * w, 0.08 * h, 0.93 * w, 0.72 * h], fill=screen)
    d.polygon([(0.15 * w, 0.65 * h), (0.4 * w, 0.3 * h), (0.6 * w, 0.65 * h)], fill=_dark(screen, 0.6))
    d.ellipse([0.86 * w, 0.75 * h, 0.9 * w, 0.79 * h], fill=(60, 220, 60, 255))


@dataclass(frozen=True)
class ObjectClass:
    name: str
    draw: Callable[[ImageDraw.ImageDraw, int, int, np.random.Generator], None]
    aspect: tuple[float, float]  # width / height range
    flippable: bool  # pose Left/Right when True, else Frontal/Unspecified
    pose: str = "Unspecified"
    grounded: bool = False  # stands on the ground in outdoor scenes (bottom below the horizon)


CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass("animal", _animal, (0.85, 1.15), False, "Frontal"),
    ObjectClass("bicycle", _bicycle, (1.4, 1.8), True, grounded=True),
    ObjectClass("boat", _boat, (0.8, 1.2), True),
    ObjectClass("car", _car, (1.7, 2.3), True, grounded=True),
    ObjectClass("fish", _fish, (1.6, 2.2), True),
    ObjectClass("flower", _flower, (0.5, 0.65), False, grounded=True),
    ObjectClass("house", _house, (0.8, 1.3), False, "Frontal", grounded=True),
    ObjectClass("person", _person, (0.38, 0.5), False, "Frontal", grounded=True),
    ObjectClass("tree", _tree, (0.55, 0.8), False, grounded=True),
    ObjectClass("tvmonitor", _tvmonitor, (1.1, 1.45), False, "Frontal"),
)


def render_object(cls: ObjectClass, w: int, h: int, rng: np.random.Generator) -> Image.Image:
    """One instance of ``cls`` on a transparent ``w`` x ``h`` RGBA canvas."""
    canvas = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    cls.draw(ImageDraw.Draw(canvas), w, h, rng)
    return canvas
