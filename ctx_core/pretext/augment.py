"""Shortcut removal for context prediction, vectorised over a batch of patches.

The paper found the network cheats with low-level cues; these transforms take
them away:

- chromatic aberration (lenses shift colour channels towards the image border,
  so colour fringes reveal absolute position): ``projection`` multiplies every
  pixel by ``B = I - a^T a / (a a^T)``, ``a = [-1, 2, -1]``, which removes the
  green-magenta axis; ``color_dropping`` keeps one random channel per patch
  and replaces the other two with Gaussian noise (std 1/100 of the kept
  channel's); ``grayscale``; or ``none``.
- pixelation (with probability ``p`` a patch is downsampled to a side drawn
  from ``[min_side, max_side]`` and upsampled back), so fine texture does not
  give away a boundary.
- per-patch mean subtraction and RMS normalisation, so brightness and
  contrast match across a pair.

All functions take patches as ``(N, 3, P, P)`` tensors and a
``torch.Generator`` so the result is a pure function of the seed. The random
draws can also be made apart from the transforms (:func:`draw_augmentation`,
:func:`apply_augmentation`): the pair sampler draws them grid by grid, each
grid from its own generator, and transforms the whole batch at once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ctx_core.encoder.preprocess import grayscale, normalise, project_colour

def drop_colour(x: torch.Tensor, gen: torch.Generator, noise_ratio: float = 0.01) -> torch.Tensor:
    """Keep one random channel per patch; the others become N(0, (ratio * std_kept)^2) noise."""
    keep = torch.randint(0, 3, (x.shape[0],), generator=gen)
    return _drop_colour(x, keep, torch.randn(x.shape, generator=gen), noise_ratio)


def _drop_colour(x: torch.Tensor, keep: torch.Tensor, normal: torch.Tensor, noise_ratio: float = 0.01) -> torch.Tensor:
    """:func:`drop_colour` with its draws given: ``keep`` (N,) channels, ``normal`` (N, 3, H, W) N(0, 1)."""
    n = x.shape[0]
    kept = x[torch.arange(n), keep]  # (N, H, W)
    std = kept.flatten(1).std(dim=1).clamp_min(1e-6)
    noise = normal * (noise_ratio * std)[:, None, None, None]
    mask = F.one_hot(keep, 3).to(x.dtype)[:, :, None, None]
    return x * mask + noise.to(x.dtype) * (1 - mask)


@functools.lru_cache(maxsize=None)
def _pixelation_matrices(patch: int) -> torch.Tensor:
    """``M[s - 1]`` (P, P) for s = 1..P-1, with ``M @ X @ M.T`` = area-downsample a P x P
    image to s x s, then bilinear-upsample back: both maps are separable and linear."""
    eye = torch.eye(patch)[None]  # (1, P, P): each row a unit impulse
    mats = []
    for side in range(1, patch):
        down = F.adaptive_avg_pool1d(eye, side)[0]  # (P, side)
        up = F.interpolate(torch.eye(side)[None], size=patch, mode="linear", align_corners=False)[0]  # (side, P)
        mats.append((down @ up).T)
    return torch.stack(mats) if mats else torch.zeros(0, patch, patch)


def pixelate(
    x: torch.Tensor, gen: torch.Generator, prob: float, min_side: int, max_side: int
) -> torch.Tensor:
    """With probability ``prob`` per patch, downsample to ``s x s`` (s uniform in
    [min_side, max_side], capped below the patch side, area averaging) and
    upsample back bilinearly; all hit patches in two batched matrix products."""
    n, _, p, _ = x.shape
    hit = torch.rand(n, generator=gen) < prob
    sides = torch.randint(min_side, max_side + 1, (n,), generator=gen).clamp_max(p - 1)
    return _pixelate(x, hit, sides)


def _pixelate(x: torch.Tensor, hit: torch.Tensor, sides: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """:func:`pixelate` with its draws given: ``hit`` bool (N,), ``sides`` (N,) in 1..P-1;
    ``inplace`` writes into ``x`` (a tensor the caller owns) instead of a copy."""
    p = x.shape[-1]
    if not hit.any() or p <= 1:
        return x
    idx = torch.nonzero(hit).flatten()
    mats = _pixelation_matrices(p).to(x)[sides[idx] - 1][:, None]  # (k, 1, P, P)
    out = x if inplace else x.clone()
    out.index_copy_(0, idx, mats @ x[idx] @ mats.transpose(-1, -2))
    return out


@dataclass(frozen=True)
class AugmentDraws:
    """The random choices of :func:`augment_patches` for N patches: which are
    pixelated and to what side, and (colour dropping) the channel kept and N(0, 1) noise."""

    hit: torch.Tensor  # bool (N,)
    sides: torch.Tensor  # int64 (N,)
    keep: torch.Tensor | None = None  # int64 (N,)
    normal: torch.Tensor | None = None  # float32 (N, 3, P, P)

    def take(self, index: torch.Tensor | slice) -> "AugmentDraws":
        """The draws of the patches at ``index``."""
        return AugmentDraws(*(None if t is None else t[index] for t in (self.hit, self.sides, self.keep, self.normal)))

    @staticmethod
    def cat(draws: "list[AugmentDraws]") -> "AugmentDraws":
        def cat(name: str) -> torch.Tensor | None:
            parts = [getattr(d, name) for d in draws]
            return None if parts[0] is None else torch.cat(parts)

        return AugmentDraws(cat("hit"), cat("sides"), cat("keep"), cat("normal"))


def draw_augmentation(gen: torch.Generator, n: int, patch: int, chroma: str, pixelation_prob: float,
                      pixelation_min_side: int, pixelation_max_side: int) -> AugmentDraws:
    """The draws :func:`augment_patches` makes from ``gen`` for ``n`` patches of side ``patch``, in its order."""
    hit = torch.rand(n, generator=gen) < pixelation_prob
    sides = torch.randint(pixelation_min_side, pixelation_max_side + 1, (n,), generator=gen).clamp_max(max(patch - 1, 1))
    if chroma != "color_dropping":
        return AugmentDraws(hit, sides)
    keep = torch.randint(0, 3, (n,), generator=gen)
    return AugmentDraws(hit, sides, keep, torch.randn((n, 3, patch, patch), generator=gen))


def draw_augmentation_numpy(rng: np.random.Generator, n: int, patch: int, chroma: str, pixelation_prob: float,
                            pixelation_min_side: int, pixelation_max_side: int) -> AugmentDraws:
    """The same choices as :func:`draw_augmentation`, drawn from a numpy generator
    (the pair sampler's per-grid stream; no torch generator per grid)."""
    hit = torch.from_numpy(rng.random(n) < pixelation_prob)
    sides = torch.from_numpy(rng.integers(pixelation_min_side, pixelation_max_side + 1, n).clip(max=max(patch - 1, 1)))
    if chroma != "color_dropping":
        return AugmentDraws(hit, sides)
    keep = torch.from_numpy(rng.integers(0, 3, n))
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))  # torch.randn is ~3x numpy's speed
    return AugmentDraws(hit, sides, keep, torch.randn((n, 3, patch, patch), generator=gen))


def apply_augmentation(patches: torch.Tensor, draws: AugmentDraws, chroma: str, rms: float) -> torch.Tensor:
    """uint8 ``(N, 3, P, P)`` patches -> float32 network inputs, with the random choices ``draws``."""
    x = _pixelate(patches.float(), draws.hit, draws.sides, inplace=True)  # .float() made a new tensor
    if chroma == "projection":
        x = project_colour(x)
    elif chroma == "color_dropping":
        x = _drop_colour(x, draws.keep, draws.normal)
    elif chroma == "grayscale":
        x = grayscale(x)
    elif chroma != "none":
        raise ValueError(f"chroma {chroma!r}: expected projection, color_dropping, grayscale or none")
    return normalise(x, rms)


def augment_patches(
    patches: torch.Tensor,
    gen: torch.Generator,
    chroma: str,
    pixelation_prob: float,
    pixelation_min_side: int,
    pixelation_max_side: int,
    rms: float,
) -> torch.Tensor:
    """uint8 ``(N, 3, P, P)`` patches -> float32 network inputs of the same shape."""
    draws = draw_augmentation(gen, patches.shape[0], patches.shape[-1], chroma, pixelation_prob,
                              pixelation_min_side, pixelation_max_side)
    return apply_augmentation(patches, draws, chroma, rms)
