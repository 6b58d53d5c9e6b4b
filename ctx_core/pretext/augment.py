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
``torch.Generator`` so the result is a pure function of the seed.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

GREEN_MAGENTA = torch.tensor([-1.0, 2.0, -1.0])


def projection_matrix() -> torch.Tensor:
    """``B = I - a^T a / (a a^T)`` for ``a = [-1, 2, -1]``, shape (3, 3)."""
    a = GREEN_MAGENTA[None, :]
    return torch.eye(3) - (a.T @ a) / (a @ a.T)


def project_colour(x: torch.Tensor) -> torch.Tensor:
    """Apply ``B`` to every pixel: ``(N, 3, H, W) -> (N, 3, H, W)``."""
    n, c, h, w = x.shape
    return (projection_matrix().to(x) @ x.reshape(n, c, h * w)).reshape(n, c, h, w)


def drop_colour(x: torch.Tensor, gen: torch.Generator, noise_ratio: float = 0.01) -> torch.Tensor:
    """Keep one random channel per patch; the others become N(0, (ratio * std_kept)^2) noise."""
    n = x.shape[0]
    keep = torch.randint(0, 3, (n,), generator=gen)
    kept = x[torch.arange(n), keep]  # (N, H, W)
    std = kept.flatten(1).std(dim=1).clamp_min(1e-6)
    noise = torch.randn(x.shape, generator=gen) * (noise_ratio * std)[:, None, None, None]
    mask = F.one_hot(keep, 3).to(x.dtype)[:, :, None, None]
    return x * mask + noise.to(x.dtype) * (1 - mask)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma replicated to three channels."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype)
    y = torch.einsum("c,nchw->nhw", w, x)
    return y[:, None].expand(-1, 3, -1, -1).contiguous()


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
    if not hit.any() or p <= 1:
        return x
    idx = torch.nonzero(hit).flatten()
    mats = _pixelation_matrices(p).to(x)[sides[idx] - 1][:, None]  # (k, 1, P, P)
    out = x.clone()
    out.index_copy_(0, idx, mats @ x[idx] @ mats.transpose(-1, -2))
    return out


def normalise(x: torch.Tensor, rms: float) -> torch.Tensor:
    """Subtract each patch's per-channel mean, then scale the patch to RMS ``rms``."""
    x = x - x.mean(dim=(2, 3), keepdim=True)
    scale = rms / x.pow(2).mean(dim=(1, 2, 3)).sqrt().clamp_min(1e-6)
    return x * scale[:, None, None, None]


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
    x = patches.float()
    x = pixelate(x, gen, pixelation_prob, pixelation_min_side, pixelation_max_side)
    if chroma == "projection":
        x = project_colour(x)
    elif chroma == "color_dropping":
        x = drop_colour(x, gen)
    elif chroma == "grayscale":
        x = grayscale(x)
    elif chroma != "none":
        raise ValueError(f"chroma {chroma!r}: expected projection, color_dropping, grayscale or none")
    return normalise(x, rms)
