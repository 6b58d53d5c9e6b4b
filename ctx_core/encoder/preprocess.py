"""The encoder's input transform: what a patch goes through before the tower sees it.

Pretraining applies it (with random shortcut defences on top, ``pretext.augment``);
every consumer of an encoder applies the same transform at test time, with the
``chroma`` and ``patch_rms`` the encoder's contract records
(``EncoderContract.preprocess``), never today's params.
Patches are float (N, 3, P, P) in pixel units 0-255.

At test time, per ``chroma``:

- ``projection``: project out the green-magenta axis, as in training;
- ``grayscale``: grayscale, as in training;
- ``color_dropping``: full colour. Training dropped a random channel to defeat
  chromatic aberration; the paper feeds the whole image at test time, and the
  first layer has learned filters for every channel;
- ``none``: full colour.

Then per-patch mean subtraction and RMS normalisation to ``patch_rms``.
"""

from __future__ import annotations

import torch

CHROMA = ("projection", "color_dropping", "grayscale", "none")

GREEN_MAGENTA = torch.tensor([-1.0, 2.0, -1.0])


def projection_matrix() -> torch.Tensor:
    """``B = I - a^T a / (a a^T)`` for ``a = [-1, 2, -1]``, shape (3, 3)."""
    a = GREEN_MAGENTA[None, :]
    return torch.eye(3) - (a.T @ a) / (a @ a.T)


def project_colour(x: torch.Tensor) -> torch.Tensor:
    """Apply ``B`` to every pixel: ``(N, 3, H, W) -> (N, 3, H, W)``."""
    n, c, h, w = x.shape
    return (projection_matrix().to(x) @ x.reshape(n, c, h * w)).reshape(n, c, h, w)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma replicated to three channels."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype)
    y = torch.einsum("c,nchw->nhw", w, x)
    return y[:, None].expand(-1, 3, -1, -1).contiguous()


def normalise(x: torch.Tensor, rms: float) -> torch.Tensor:
    """Subtract each patch's per-channel mean, then scale the patch to RMS ``rms``."""
    x = x - x.mean(dim=(2, 3), keepdim=True)
    scale = rms / x.pow(2).mean(dim=(1, 2, 3)).sqrt().clamp_min(1e-6)
    return x * scale[:, None, None, None]


def colour_matrix(chroma: str) -> torch.Tensor:
    """The 3x3 colour map of ``chroma`` at test time (identity for ``color_dropping`` and ``none``)."""
    if chroma == "projection":
        return projection_matrix()
    if chroma == "grayscale":
        return torch.tensor([0.299, 0.587, 0.114]).expand(3, 3)
    if chroma in ("color_dropping", "none"):
        return torch.eye(3)
    raise ValueError(f"chroma {chroma!r}: expected one of {', '.join(CHROMA)}")


def test_time(x: torch.Tensor, chroma: str, rms: float) -> torch.Tensor:
    """float (N, 3, P, P) pixels 0-255 -> encoder input of the same shape: the colour map of
    ``chroma`` (colour dropping is a training-time defence only), then :func:`normalise`."""
    if chroma == "projection":
        x = project_colour(x)
    elif chroma == "grayscale":
        x = grayscale(x)
    elif chroma not in CHROMA:
        raise ValueError(f"chroma {chroma!r}: expected one of {', '.join(CHROMA)}")
    return normalise(x, rms)
