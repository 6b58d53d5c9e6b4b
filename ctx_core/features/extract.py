"""The extraction loop: images in chunks -> patches -> every embedder -> shards.

Memory is bounded by one chunk of images (``images_per_chunk`` decoded images
and their patches) plus one shard buffer per feature set, whatever the size
of the dataset.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ctx_core.features.encoders import Embedder
from ctx_core.features.grid import ScaleLayout
from ctx_core.features.preprocess import image_patches
from ctx_core.feature_store import FeatureWriter
from ctx_core.store.images import read_image

LayoutFn = Callable[[int, int, int], list[ScaleLayout]]
"""(image number, width, height) -> the patches to cut from that image."""


@dataclass
class ExtractStats:
    images: int = 0
    images_without_patches: int = 0
    patches: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time per embedder (forward passes only), plus ``decode`` (read, resize, cut, preprocess)."""


def patch_index(image_id: str, layouts: list[ScaleLayout]) -> pd.DataFrame:
    """Index rows (image_id, x0, y0, x1, y1, scale) for ``layouts``, in cutting order."""
    boxes = np.concatenate([lay.boxes for lay in layouts]) if layouts else np.zeros((0, 4), np.int64)
    scales = np.concatenate([np.full(len(lay.boxes), lay.scale) for lay in layouts]) if layouts else np.zeros(0)
    return pd.DataFrame({"image_id": image_id, "x0": boxes[:, 0], "y0": boxes[:, 1], "x1": boxes[:, 2],
                         "y1": boxes[:, 3], "scale": scales})


def extract(
    images: Sequence[tuple[str, Path]],
    layout: LayoutFn,
    patch: int,
    preprocess: Callable[[torch.Tensor], torch.Tensor],
    embedders: Sequence[Embedder],
    writers: dict[str, FeatureWriter],
    batch_size: int,
    images_per_chunk: int,
    progress: bool | None = None,
) -> ExtractStats:
    """Cut, preprocess and embed the patches of ``images`` ((image_id, path) pairs),
    appending each embedder's features to ``writers[embedder.name]``."""
    stats = ExtractStats(seconds={"decode": 0.0, **{e.name: 0.0 for e in embedders}})
    bar = tqdm(total=len(images), unit="img", disable=progress is False, desc="extract")
    for start in range(0, len(images), images_per_chunk):
        t0 = time.perf_counter()
        patches, index = [], []
        for number, (image_id, path) in enumerate(images[start:start + images_per_chunk], start):
            img = read_image(path)
            layouts = layout(number, img.shape[2], img.shape[1])
            if not layouts:
                stats.images_without_patches += 1
                continue
            patches.append(image_patches(img, layouts, patch))
            index.append(patch_index(image_id, layouts))
        stats.images += min(images_per_chunk, len(images) - start)
        bar.update(min(images_per_chunk, len(images) - start))
        if not patches:
            continue
        x = preprocess(torch.cat(patches))
        chunk_index = pd.concat(index, ignore_index=True)
        stats.seconds["decode"] += time.perf_counter() - t0
        for emb in embedders:
            t0 = time.perf_counter()
            feats = torch.cat([emb.embed(x[b:b + batch_size]) for b in range(0, len(x), batch_size)])
            stats.seconds[emb.name] += time.perf_counter() - t0
            writers[emb.name].add(feats, chunk_index)
        stats.patches += len(x)
    bar.close()
    return stats
