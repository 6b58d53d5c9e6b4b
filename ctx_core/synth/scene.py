"""Compose one synthetic scene: a textured background with 1..N objects.

Objects vary in class, scale (log-uniform over 7.5x), aspect, colour, flip and
position; later objects occlude earlier ones and objects may run off the
border. Boxes are the VOC kind: the tightest box around the *visible* pixels.
An object is ``truncated`` when part of it lies outside the image and
``difficult`` when it is tiny or mostly hidden.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ctx_core.synth.background import render_background
from ctx_core.synth.objects import CLASSES, render_object

SCALE_RANGE = (0.08, 0.6)  # object height as a share of the longer image side
ANCHOR_SCALE = (0.55, 0.95)  # the main object's height as a share of the shorter side (object-centric, like ImageNet)
MIN_SIDE_EASY = 12  # px; a box with a shorter side is marked difficult
MIN_VISIBLE_EASY = 0.4  # share of an object's pixels that must show to be non-difficult
TRUNCATED_SHARE = 0.05  # share of an object's pixels outside the image that marks it truncated
IMAGE_EXTENSIONS = {".png", ".webp", ".gif", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg"}


@dataclass(frozen=True)
class SceneObject:
    name: str
    pose: str
    truncated: bool
    difficult: bool
    box: tuple[int, int, int, int]  # x0, y0, x1, y1; 0-based, end exclusive


class ObjectPalette:
    """Where object appearances come from: procedural drawings or an RGBA sprite folder."""

    def __init__(self, sprites: Path | None = None):
        self.sprites: dict[str, list[Path]] = {}
        if sprites is None:
            self.names = tuple(c.name for c in CLASSES)
        else:
            self.sprites = find_sprites(sprites)
            self.names = tuple(sorted(self.sprites))
        self._cache: dict[Path, Image.Image] = {}

    def grounded(self, idx: int) -> bool:
        """Whether class ``idx`` stands on the ground (sprites: never assumed)."""
        return not self.sprites and CLASSES[idx].grounded

    def render(self, idx: int, height: int, rng: np.random.Generator) -> tuple[Image.Image, str]:
        """An RGBA instance of class ``idx`` about ``height`` px tall, and its pose."""
        if not self.sprites:
            cls = CLASSES[idx]
            aspect = rng.uniform(*cls.aspect)
            w, h = max(2, round(height * aspect)), max(2, height)
            img = render_object(cls, w, h, rng)
            pose = cls.pose
            if cls.flippable:
                flip = rng.random() < 0.5
                img = ImageOps.mirror(img) if flip else img
                pose = "Left" if flip else "Right"
            return img, pose
        paths = self.sprites[self.names[idx]]
        path = paths[int(rng.integers(len(paths)))]
        sprite = self._cache.get(path)
        if sprite is None:
            with Image.open(path) as im:
                sprite = im.convert("RGBA")
            box = sprite.getchannel("A").getbbox()
            sprite = sprite.crop(box) if box else sprite
            self._cache[path] = sprite
        aspect = sprite.width / sprite.height * rng.uniform(0.9, 1.1)
        img = sprite.resize((max(2, round(height * aspect)), max(2, height)), Image.BILINEAR)
        if rng.random() < 0.5:
            img = ImageOps.mirror(img)
        return img, "Unspecified"


def find_sprites(root: Path) -> dict[str, list[Path]]:
    """Class name -> sorted image paths, from ``root/<class>/*.<image ext>``."""
    if not root.is_dir():
        raise ValueError(f"sprite folder {root} does not exist or is not a folder")
    found = {
        sub.name: sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        for sub in sorted(root.iterdir())
        if sub.is_dir()
    }
    found = {k: v for k, v in found.items() if v}
    if not found:
        exts = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise ValueError(f"sprite folder {root} has no images: expected {root}/<class>/<name> with one of {exts}")
    return found


def image_shape(rng: np.random.Generator, size: int) -> tuple[int, int]:
    """(width, height): the longer side is ``size``; the shorter is 75 % or 100 % of it."""
    short = round(0.75 * size) if rng.random() < 0.6 else size
    return (size, short) if rng.random() < 0.5 else (short, size)


def compose_scene(
    rng: np.random.Generator,
    size: int,
    palette: ObjectPalette,
    n_objects: int,
    anchor_class: int,
) -> tuple[Image.Image, list[SceneObject]]:
    """Render one scene; ``anchor_class`` is drawn last, large and near the centre,
    so every image surely shows one clear instance of it."""
    w, h = image_shape(rng, size)
    img, horizon = render_background(rng, w, h)
    n_cls = len(palette.names)
    classes = [int(c) for c in rng.integers(n_cls, size=n_objects - 1)] + [anchor_class]
    owner = np.full((h, w), -1, np.int16)
    placed: list[tuple[int, str, int, bool]] = []  # class, pose, full pixel count, truncated
    for k, cls in enumerate(classes):
        anchor = k == len(classes) - 1
        if anchor:
            oh = round(min(w, h) * float(rng.uniform(*ANCHOR_SCALE)))
        else:
            oh = round(size * float(np.exp(rng.uniform(np.log(SCALE_RANGE[0]), np.log(SCALE_RANGE[1])))))
        obj, pose = palette.render(cls, oh, rng)
        ow, oh = obj.size
        if anchor and (ow > 0.9 * w or oh > 0.9 * h):
            shrink = min(0.9 * w / ow, 0.9 * h / oh)
            obj = obj.resize((max(2, int(ow * shrink)), max(2, int(oh * shrink))), Image.BILINEAR)
            ow, oh = obj.size
        if anchor:
            cx, cy = rng.uniform(0.4, 0.6) * w, rng.uniform(0.4, 0.6) * h
        else:
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        if horizon is not None and palette.grounded(cls):
            # stand on the ground: the bottom lands between the horizon and the image bottom
            bottom = max(cy + oh / 2, horizon + 0.05 * h) if anchor else rng.uniform(horizon + 0.05 * h, h + 0.1 * oh)
            cy = min(bottom, h + 0.1 * oh) - oh / 2
        x0, y0 = round(cx - ow / 2), round(cy - oh / 2)
        alpha = np.asarray(obj.getchannel("A")) > 127
        full = int(alpha.sum())
        # the part of the object canvas that lands inside the image
        ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + ow, w), min(y0 + oh, h)
        if full == 0 or ix0 >= ix1 or iy0 >= iy1:
            continue
        sub = alpha[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]
        owner[iy0:iy1, ix0:ix1][sub] = len(placed)
        img.paste(obj, (x0, y0), obj)
        inside = int(sub.sum())
        placed.append((cls, pose, full, inside < full * (1 - TRUNCATED_SHARE)))

    objects = []
    for idx, (cls, pose, full, truncated) in enumerate(placed):
        ys, xs = np.nonzero(owner == idx)
        if len(xs) == 0:
            continue  # completely hidden by later objects
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        visible = len(xs) / full
        tiny = min(box[2] - box[0], box[3] - box[1]) < MIN_SIDE_EASY
        objects.append(
            SceneObject(
                name=palette.names[cls],
                pose=pose,
                truncated=truncated,
                difficult=bool(tiny or visible < MIN_VISIBLE_EASY),
                box=box,
            )
        )
    return img, objects
