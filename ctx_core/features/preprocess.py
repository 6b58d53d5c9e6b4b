"""Patches cut from images on the extraction grid, as float pixels 0-255.

The encoder's test-time transform (colour map and RMS normalisation, with the
values its contract records) is ``EncoderContract.preprocess``
(``ctx_core.encoder.preprocess``); no pixelation: it was a training-time
shortcut removal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ctx_core.features.grid import ScaleLayout


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


#END
