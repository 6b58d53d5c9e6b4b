"""Decoded images for every pretext sampler: a per-process cache and skipping of unreadable files.

Each task's sampler draws images with a ``numpy`` generator seeded by
``(seed, step, item)``; :meth:`ImageSource.draw` takes exactly one number per
draw whether the image decodes or not, so every process and a resumed run make
the same batches, and a file cut since ingestion is skipped (logged once per
process, counted in ``unreadable``) instead of stopping a run.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from ctx_core.errors import UserError
from ctx_core.store.images import UnreadableImageError, read_image

log = logging.getLogger(__name__)


class NoUsableImages(UserError):
    """No image is large enough for the task's crops (or none can be decoded)."""


class ImageSource:
    """``images`` (an :class:`~ctx_core.pretext.data.ImageList`) decoded on demand, the first ones kept
    while ``image_cache_mb`` allows (no eviction). Pickled into a DataLoader worker without the cache."""

    def __init__(self, images, image_cache_mb: int):
        self.images = images
        self._cache_mb = image_cache_mb
        self._cache: dict[int, torch.Tensor] = {}
        self._cache_left = image_cache_mb * 2**20
        self.unreadable: dict[int, str] = {}  # image index -> why it was skipped (this process)

    def __getstate__(self) -> dict:
        # a DataLoader worker gets the sampler without the decoded images: each fills its own
        state = self.__dict__.copy()
        state["_cache"], state["_cache_left"] = {}, self._cache_mb * 2**20
        return state

    def image(self, idx: int) -> torch.Tensor:
        """Image ``idx`` decoded (uint8, 3 x H x W), kept while the cache budget allows."""
        img = self._cache.get(idx)
        if img is None:
            img = read_image(self.images.paths[idx])
            if img.numel() <= self._cache_left:
                self._cache[idx] = img
                self._cache_left -= img.numel()
        return img

    def draw(self, rng: np.random.Generator) -> tuple[int, torch.Tensor]:
        """A random image, decoded; an unreadable one is skipped, logged once and another drawn
        (one number from ``rng`` per draw either way)."""
        n = len(self.images.paths)
        while len(self.unreadable) < n:
            idx = int(rng.integers(n))
            if idx in self.unreadable:
                continue
            try:
                return idx, self.image(idx)
            except UnreadableImageError as exc:
                self.unreadable[idx] = str(exc)
                log.warning("pretraining skips %s", exc)
        raise NoUsableImages(f"none of the {n} images can be decoded, e.g. {next(iter(self.unreadable.values()))}")
