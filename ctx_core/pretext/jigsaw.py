"""Jigsaw puzzles (Noroozi & Favaro 2016) as a :class:`~ctx_core.pretext.tasks.PretextTask`.

A puzzle is the 3x3 grid of the context task (``patch_size`` tiles, ``gap`` px
between them, each jittered by up to ``jitter`` px) with its tiles put in the
order of one of ``jigsaw_permutations`` fixed permutations; the network embeds
the 9 tiles with the shared tower, concatenates their features in the shuffled
order and names the permutation. The paper's shortcut defences come from the
grid and :mod:`ctx_core.pretext.augment`: gaps and jitter (no edge continuation),
per-tile mean/RMS normalisation (no matching of low-level statistics), the
``chroma`` handling and pixelation per tile.

Tile ``k`` of a shuffled puzzle with permutation ``p`` is grid cell ``p[k]``
(cells in raster order). Everything about puzzle ``i`` of step ``t`` (image,
grid origin, jitter, permutation, augmentation draws) comes from
``np.random.default_rng([seed, t, i])``, so a batch is a pure function of
``(seed, step)`` and rank ``r`` of ``W`` makes puzzles ``[r B/W, (r+1) B/W)`` of it.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from ctx_core.config import PretrainConfig
from ctx_core.distributed import Distributed
from ctx_core.models.towers import Tower, build_tower
from ctx_core.pretext.augment import AugmentDraws, apply_augmentation, draw_augmentation_numpy
from ctx_core.pretext.data import ImageList, cut_patches
from ctx_core.pretext.evaluate import EVAL_SEED_OFFSET
from ctx_core.pretext.grid import sample_grid
from ctx_core.pretext.images import ImageSource
from ctx_core.pretext.tasks import HeldOutScore, PretextTask, PatchClassification

TILES = 9
# the permutation set's own stream of ``seed`` (a spawn key, so it never equals a puzzle's [seed, step, i])
_PERMUTATION_STREAM = (TILES,)


@functools.lru_cache(maxsize=1)
def _all_permutations() -> np.ndarray:
    """All 9! permutations of the tiles, uint8 (9, 362880): column j is permutation j in
    lexicographic order (column-major, so comparing one position across all is a contiguous row)."""
    return np.ascontiguousarray(np.array(list(itertools.permutations(range(TILES))), dtype=np.uint8).T)


def _hamming_to_all(candidates: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Hamming distance (uint8, (C,)) of each column of ``candidates`` (9, C) to ``perm`` (9,)."""
    dist = np.zeros(candidates.shape[1], np.uint8)
    differs = np.empty(candidates.shape[1], bool)
    for k in range(TILES):  # row by row: 20x faster than (C, 9) != (9,) then sum
        np.not_equal(candidates[k], perm[k], out=differs)
        dist += differs
    return dist


@functools.lru_cache(maxsize=None)
def permutation_set(n: int, seed: int) -> np.ndarray:
    """``n`` permutations of the 9 tiles far apart in Hamming distance: int64 (n, 9), read-only.

    Greedy max-min selection over **all** 9! = 362,880 permutations, no candidate pool: they take
    3.3 MB and one greedy step ~1 ms (measured on a 2-core AVX2 EPYC: 0.4-0.6 s to enumerate, then
    0.2 s for 100 permutations, 1.5-2 s for 1,000). Start from a random permutation, then repeatedly
    add the candidate whose distance to its nearest chosen permutation is largest, ties broken at
    random. This is Noroozi & Favaro's Algorithm 1 with the minimum distance as the criterion (theirs
    ranks by the summed distance; the minimum guarantees no two classes are close): the smallest
    distance is 9 for 4 permutations, 8 for 10, 6 for 100 (random sets of 100: 2-3), 5 for 1,000.
    Deterministic in ``(n, seed)``; cached per process.
    """
    total = math.factorial(TILES)
    if not 1 <= n <= total:
        raise ValueError(f"jigsaw_permutations = {n}: expected 1 to {total} (9!)")
    candidates = _all_permutations()
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=_PERMUTATION_STREAM))
    chosen = [int(rng.integers(total))]
    nearest = _hamming_to_all(candidates, candidates[:, chosen[0]])  # chosen ones are at 0: never re-picked
    while len(chosen) < n:
        best = np.flatnonzero(nearest == nearest.max())
        pick = int(best[rng.integers(len(best))])
        chosen.append(pick)
        np.minimum(nearest, _hamming_to_all(candidates, candidates[:, pick]), out=nearest)
    out = candidates[:, chosen].T.astype(np.int64)
    out.flags.writeable = False
    return out


def min_hamming(perms: np.ndarray) -> int:
    """The smallest Hamming distance between two rows of ``perms`` (n, 9), n >= 2."""
    perms = np.asarray(perms)
    dist = (perms[:, None, :] != perms[None, :, :]).sum(-1)
    return int(dist[np.triu_indices(len(perms), 1)].min())


@dataclass(frozen=True)
class PuzzleBatch:
    """Shuffled puzzles.

    ``patches``: float32 (N*9, 3, P, P), tile ``k`` (shuffled position) of puzzle ``i`` at row
    ``9 i + k``; ``labels``: int64 (N,) index into the sampler's ``permutations``; ``boxes``:
    int64 (N, 9, 4) x0, y0, x1, y1 of the tile at each shuffled position; ``image_index``: (N,).
    """

    step: int
    patches: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor
    image_index: torch.Tensor


def puzzles_per_step(cfg: PretrainConfig) -> int:
    """Puzzles of the global batch: ``cfg.tower_passes / 9`` (the equal tower budget), at least 1."""
    return max(1, cfg.tower_passes // TILES)


class JigsawSampler(ImageSource):
    """Makes :class:`PuzzleBatch` es from an :class:`~ctx_core.pretext.data.ImageList`;
    ``batch_size`` puzzles (default :func:`puzzles_per_step`) in the global batch."""

    def __init__(self, images: ImageList, cfg: PretrainConfig, batch_size: int | None = None):
        super().__init__(images, cfg.image_cache_mb)
        self.cfg = cfg
        self.batch_size = batch_size or puzzles_per_step(cfg)
        self.permutations = permutation_set(cfg.jigsaw_permutations, cfg.seed)

    def batch(self, step: int, seed: int | None = None, rank: int = 0, world: int = 1) -> PuzzleBatch:
        """Puzzles ``[rank B/world, (rank+1) B/world)`` of step ``step``'s global batch of ``B = batch_size``."""
        cfg = self.cfg
        base = cfg.seed if seed is None else seed
        if self.batch_size % world or not 0 <= rank < world:
            raise ValueError(f"batch of {self.batch_size} puzzles cannot be split into {world} equal parts "
                             f"(rank {rank})")
        lo, hi = rank * self.batch_size // world, (rank + 1) * self.batch_size // world
        tiles, draws, labels, boxes, owners = [], [], [], [], []
        for puzzle in range(lo, hi):
            rng = np.random.default_rng([base, step, puzzle])
            idx, img = self.draw(rng)
            corners = sample_grid(rng, img.shape[2], img.shape[1], cfg.patch_size, cfg.gap, cfg.jitter)
            label = int(rng.integers(len(self.permutations)))
            shuffled = corners[self.permutations[label]]  # shuffled position k holds cell permutation[k]
            tiles.append(cut_patches(img, shuffled, cfg.patch_size))
            draws.append(draw_augmentation_numpy(rng, TILES, cfg.patch_size, cfg.chroma, cfg.pixelation_prob,
                                                 cfg.pixelation_min_side, cfg.pixelation_max_side))
            labels.append(label)
            boxes.append(np.concatenate([shuffled, shuffled + cfg.patch_size], axis=1))
            owners.append(idx)
        return PuzzleBatch(
            step=step,
            patches=apply_augmentation(torch.cat(tiles), AugmentDraws.cat(draws), cfg.chroma, cfg.patch_rms),
            labels=torch.tensor(labels, dtype=torch.int64),
            boxes=torch.from_numpy(np.stack(boxes).astype(np.int64)),
            image_index=torch.tensor(owners, dtype=torch.int64),
        )


class JigsawNet(nn.Module):
    """``forward(tiles)``: (N*9, 3, P, P) shuffled tiles -> (N, n_permutations) logits.

    One tower embeds every tile (weights shared by construction); the 9 fc6 features of a
    puzzle, concatenated in shuffled order, go through Linear(9 D, hidden) - BN - ReLU -
    Linear(hidden, n_permutations). BN without scale/shift, as the context head's fc7.
    """

    def __init__(self, tower: Tower, n_permutations: int, hidden: int | None = None):
        super().__init__()
        self.tower = tower
        hidden = hidden or tower.feature_dim
        self.head = nn.Sequential(
            nn.Linear(TILES * tower.feature_dim, hidden, bias=False), nn.BatchNorm1d(hidden, affine=False),
            nn.ReLU(inplace=True), nn.Linear(hidden, n_permutations),
        )

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        feats = self.tower(tiles)
        return self.head(feats.reshape(-1, TILES * feats.shape[1]))


class JigsawMethod(PatchClassification):
    """Cross-entropy over the permutation index on this rank's puzzles of each global batch."""

    rate_unit = "puzzles"

    def rates(self, steps: int, seconds: float) -> dict[str, float]:
        puzzles = super().rates(steps, seconds)["puzzles_per_second"]
        return {"puzzles_per_second": puzzles, "tower_passes_per_second": TILES * puzzles}


@torch.inference_mode()
def puzzle_accuracy(model: JigsawNet, sampler: JigsawSampler, n_puzzles: int, device: torch.device,
                    amp: bool = False) -> tuple[float, int]:
    """Accuracy on at least ``n_puzzles`` puzzles (whole batches) drawn with ``cfg.seed + EVAL_SEED_OFFSET``,
    and how many were scored."""
    model.eval()
    seed = sampler.cfg.seed + EVAL_SEED_OFFSET
    correct = total = step = 0
    while total < n_puzzles:
        batch = sampler.batch(step, seed=seed)
        tiles = batch.patches.to(device).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(tiles)
        correct += int((logits.argmax(1).cpu() == batch.labels).sum())
        total += len(batch.labels)
        step += 1
    model.train()
    return correct / total, total


def puzzles_montage(batch: PuzzleBatch, permutations: np.ndarray, image_paths: Sequence[Path], path: Path,
                    count: int = 4, tile: int = 64) -> Path:
    """One row per puzzle: the image with its grid (cells numbered in raster order), then the tiles
    in the order the network sees them (raw pixels, no augmentation), each marked with its cell."""
    n = min(count, len(batch.labels))
    thumb, gap = 3 * tile + 4, 6
    sheet = Image.new("RGB", (2 * thumb + gap, n * (thumb + gap)), "white")
    for i in range(n):
        with Image.open(image_paths[int(batch.image_index[i])]) as im:
            img = im.convert("RGB")
        boxes, cells = batch.boxes[i].tolist(), permutations[int(batch.labels[i])]
        scale = thumb / max(img.size)
        small = img.resize((round(img.width * scale), round(img.height * scale)))
        draw = ImageDraw.Draw(small)
        for box, cell in zip(boxes, cells):
            draw.rectangle([c * scale for c in box], outline="#00d000", width=1)
            draw.text((box[0] * scale + 2, box[1] * scale + 1), str(cell), fill="yellow")
        y = i * (thumb + gap)
        sheet.paste(small, (0, y))
        for k, (box, cell) in enumerate(zip(boxes, cells)):
            crop = img.crop(box).resize((tile, tile))
            ImageDraw.Draw(crop).text((2, 1), str(cell), fill="yellow")
            sheet.paste(crop, (thumb + gap + (k % 3) * (tile + 2), y + (k // 3) * (tile + 2)))
        ImageDraw.Draw(sheet).text((thumb + gap, y + thumb - 10), f"permutation {int(batch.labels[i])}", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


class JigsawTask(PretextTask):
    name = "jigsaw"
    unit = "puzzles"

    def min_side(self, cfg: PretrainConfig) -> int:
        return cfg.grid_extent

    def batch_items(self, cfg: PretrainConfig) -> int:
        return puzzles_per_step(cfg)

    def sampler(self, images: ImageList, cfg: PretrainConfig, batch_size: int | None = None) -> JigsawSampler:
        return JigsawSampler(images, cfg, batch_size)

    def model(self, cfg: PretrainConfig) -> JigsawNet:
        torch.manual_seed(cfg.seed)
        return JigsawNet(build_tower(cfg.arch, cfg.patch_size), cfg.jigsaw_permutations)

    def method(self, sampler: JigsawSampler, cfg: PretrainConfig, env: Distributed,
               device: torch.device) -> JigsawMethod:
        return JigsawMethod(sampler, cfg, env, device)

    def evaluate(self, model: JigsawNet, sampler: JigsawSampler, n_items: int, device: torch.device,
                 amp: bool = False) -> HeldOutScore:
        # labels are drawn uniformly and independently of the pixels: any guess that ignores the
        # tiles scores 1 / K in expectation
        accuracy, items = puzzle_accuracy(model, sampler, n_items, device, amp=amp)
        return HeldOutScore(accuracy, 1 / len(sampler.permutations), items)

    def montage(self, sampler: JigsawSampler, image_paths: Sequence[Path], path: Path, seed: int) -> Path:
        return puzzles_montage(sampler.batch(0, seed=seed), sampler.permutations, image_paths, path)


TASK = JigsawTask()
