"""Image files: which names are images, and decoding one to a tensor."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from ctx_core.errors import UserError

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


class UnreadableImageError(UserError):
    """An image file that is missing, truncated or corrupt; the message names it and the remedy."""


def read_image(path: Path) -> torch.Tensor:
    """uint8 (3, H, W) RGB; :class:`UnreadableImageError` when the file cannot be read or decoded."""
    try:
        raw = Path(path).read_bytes()
        if not raw:
            raise ValueError("empty file")
        data = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode_image(data, mode=ImageReadMode.RGB)
    except (OSError, RuntimeError, ValueError) as exc:
        # torchvision's message starts with its C++ source location; the last part says what is wrong
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).split(", ")[-1].strip()
        raise UnreadableImageError(
            f"image {path} cannot be read ({why}); if it is in the image store, re-run `ctx ingest --force` "
            f"to rebuild the store, else replace or remove the file"
        ) from None
