"""Patches as the encoder saw them in pretraining, without the random parts.

Test-time preprocessing per ``chroma`` (the pretraining setting, read from the
encoder file when it records one):

- ``projection``: project out the green-magenta axis, as in training;
- ``grayscale``: grayscale, as in training;
- ``color_dropping``: full colour. Training dropped a random channel to defeat
  chromatic aberration; the paper feeds the whole image at test time, and the
  first layer has learned filters for every channel;
- ``none``: full colour.

Then per-patch mean subtraction and RMS normalisation (``patch_rms``). No
pixelation: it was a training-time shortcut removal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ctx_core.features.grid import ScaleLayout
from ctx_core.pretext.augment import grayscale, normalise, project_colour


def resize_image(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (3, H, W) -> float32 (3, h, w) for ``size`` = (w, h), antialiased."""
    x = img.float()[None]
    if (x.shape[-1], x.shape[-2]) == size:
        return x[0]
    return F.interpolate(x, size=(size[1], size[0]), mode="bilinear", antialias=True, align_corners=False)[0]


def cut(resized: torch.Tensor, corners: torch.Tensor, patch: int) -> torch.Tensor:
    """float (3, h, w) and (K, 2) top-left x, y -> (K, 3, patch, patch)."""
    ar = torch.arange(patch)
    xs = corners[:, 0, None] + ar
    ys = corners[:, 1, None] + ar
    return resized[:, ys[:, :, None], xs[:, None, :]].permute(1, 0, 2, 3).contiguous()


def image_patches(img: torch.Tensor, layouts: list[ScaleLayout], patch: int) -> torch.Tensor:
    """All patches of ``layouts`` from uint8 (3, H, W): float32 (K, 3, patch, patch), 0-255."""
    parts = [cut(resize_image(img, lay.size), torch.as_tensor(lay.corners), patch) for lay in layouts]
    return torch.cat(parts) if parts else torch.empty(0, 3, patch, patch)


def crop_box(img: torch.Tensor, box: tuple[int, int, int, int], patch: int) -> torch.Tensor:
    """One user box (x0, y0, x1, y1; 0-based, end exclusive) of uint8 (3, H, W) -> float (1, 3, patch, patch)."""
    x0, y0, x1, y1 = box
    region = img[:, y0:y1, x0:x1].float()[None]
    return F.interpolate(region, size=(patch, patch), mode="bilinear", antialias=True, align_corners=False)


def test_time(x: torch.Tensor, chroma: str, rms: float) -> torch.Tensor:
    """float (N, 3, P, P) pixels 0-255 -> encoder input of the same shape (see module doc)."""
    if chroma == "projection":
        x = project_colour(x)
    elif chroma == "grayscale":
        x = grayscale(x)
    elif chroma not in ("color_dropping", "none"):
        raise ValueError(f"chroma {chroma!r}: expected projection, color_dropping, grayscale or none")
    return normalise(x, rms)
