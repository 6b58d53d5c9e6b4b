"""The chromatic-aberration diagnostic finds colour-borne position cues, and projection removes them."""

import numpy as np
from PIL import Image

from ctx_core.config import PretrainConfig
from ctx_core.pretext.chroma_diagnostic import position_rmse
from ctx_core.pretext.data import ImageList


def fringe_images(folder, n=12, w=96, h=96):
    """Grey noise plus a green-magenta wave across x, like aberration fringes that change with the
    distance from the centre: within a patch its slope tells x, but only along a = [-1, 2, -1],
    the colour axis the projection removes. (y carries no cue, so the best ratio is about 0.71.)"""
    folder.mkdir()
    rng = np.random.default_rng(0)
    wave = np.cos(2 * np.pi * np.arange(w, dtype=np.float32) / w)[None, :, None]
    a = np.array([-1.0, 2.0, -1.0])
    paths = []
    for k in range(n):
        grey = 128 + 10 * rng.standard_normal((h, w, 1))
        img = np.clip(grey + 55 * wave * a, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{k}.png")
        paths.append(folder / f"{k}.png")
    return ImageList(tuple(paths), tuple((w, h) for _ in paths), 0)


def test_projection_hides_colour_borne_position(tmp_path):
    images = fringe_images(tmp_path / "imgs")
    cfg = PretrainConfig(patch_size=16, gap=0, jitter=0, pixelation_prob=0.0)
    # 200 steps, not 60: at 60 the learned ratio depended on the CPU's float kernels (0.88 on a
    # 2-core AVX2-only AMD EPYC, below 0.85 elsewhere); at 200 it is 0.73 against 1.05 there
    seen = position_rmse(images, images, cfg, "none", steps=200, batch=64, eval_patches=256)
    hidden = position_rmse(images, images, cfg, "projection", steps=200, batch=64, eval_patches=256)
    assert seen.ratio < 0.85, seen
    assert hidden.ratio > 0.93, hidden
