"""Image files: which names are images, and decoding one to a tensor."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

with warnings.catch_warnings():
    # torchvision 0.29 deprecates its decoders in favour of torchcodec, which
    # this stack does not ship; they remain the fastest JPEG path here.
    warnings.simplefilter("ignore", DeprecationWarning)
    from torchvision.io import ImageReadMode, decode_image

# What a folder source, a VOC root's JPEGImages/ and an image folder given to
# pretraining are searched for (any case).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def read_image(path: Path) -> torch.Tensor:
    """uint8 (3, H, W) RGB."""
    data = torch.frombuffer(bytearray(Path(path).read_bytes()), dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_image(data, mode=ImageReadMode.RGB)
