"""Data-dependent rescaling of a conv trunk (Krähenbühl, Doersch, Donahue & Darrell, ICLR 2016).

Two steps on a calibration batch of real images, for a chain of conv / ReLU /
max-pool layers (the folded trunk of ``model.py``):

1. **within-layer**: for each conv in forward order, measure its outputs per
   channel ``c`` over the batch and all positions (mean ``mu_c``, std
   ``sigma_c``, with the layers before it already rescaled) and set
   ``W_c <- W_c / sigma_c``, ``b_c <- (b_c - mu_c) / sigma_c``: every channel then
   has zero mean and unit variance on the batch.
2. **between-layer**: make the ratio ``C_k = E||dL/dW_k||^2 / ||W_k||^2`` (how
   fast SGD changes layer ``k`` relative to its size) equal across layers.
   Each round scales conv ``k`` (weights and bias) by ``r_k = (C_k / C)^(damping / 4)``,
   ``C`` the geometric mean, and divides the next conv's weights by ``r_k``;
   because ReLU and max-pool are positively homogeneous the trunk computes
   the same function, while ``C_k`` moves by ``r_k^-4``. The last conv is only
   rescaled through this undo, so the trunk's output stays as step 1 left
   it. ``L`` is a fixed random Gaussian projection of the trunk output: the
   detection heads are not trained yet, so no real loss exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ctx_core.errors import UserError


class RescaleError(UserError):
    """A trunk the rescaling is not defined for."""


@dataclass(frozen=True)
class RescaleReport:
    """``sigma_before``: per conv, the mean output std before step 1;
    ``ratios_before``/``ratios_after``: ``C_k`` per conv around step 2."""

    sigma_before: list[float]
    ratios_before: list[float]
    ratios_after: list[float]


def _check_chain(trunk: nn.Sequential) -> list[int]:
    """Indices of the convs in ``trunk``; :class:`RescaleError` when a conv hides inside a block."""
    convs = [k for k, layer in enumerate(trunk) if isinstance(layer, nn.Conv2d)]
    nested = [type(layer).__name__ for layer in trunk
              if not isinstance(layer, nn.Conv2d) and any(isinstance(m, nn.Conv2d) for m in layer.modules())]
    if nested or not convs:
        raise RescaleError(f"data-dependent rescaling needs a plain chain of conv layers (compact or paper tower); "
                           f"this trunk has {', '.join(sorted(set(nested))) or 'no conv layer'}")
    return convs


@torch.no_grad()
def normalise_within_layers(trunk: nn.Sequential, images: Sequence[torch.Tensor], eps: float = 1e-5) -> list[float]:
    """Step 1 in place. ``images``: network inputs, each (3, H, W) (sizes may differ).

    Returns, per conv, the mean over channels of the output std before rescaling.
    """
    convs = set(_check_chain(trunk))
    acts = [img[None].float() for img in images]
    sigmas = []
    for k, layer in enumerate(trunk):
        if k in convs:
            out = [layer(a) for a in acts]
            flat = torch.cat([o.transpose(0, 1).reshape(o.shape[1], -1) for o in out], dim=1)  # (C, sum N*H*W)
            mu, sigma = flat.mean(dim=1), flat.std(dim=1, unbiased=False).clamp_min(eps)
            sigmas.append(float(sigma.mean()))
            layer.weight.div_(sigma[:, None, None, None])
            if layer.bias is None:
                layer.bias = nn.Parameter(torch.zeros_like(mu))
            layer.bias.sub_(mu).div_(sigma)
        acts = [layer(a) for a in acts]
    return sigmas


def gradient_weight_ratios(trunk: nn.Sequential, images: Sequence[torch.Tensor], seed: int = 0) -> np.ndarray:
    """``C_k = mean over images of ||dL/dW_k||^2 / ||W_k||^2`` per conv (K,), ``L = <trunk(x), G>``,
    ``G`` standard Gaussian drawn from ``seed`` per image."""
    convs = [trunk[k] for k in _check_chain(trunk)]
    gen = torch.Generator().manual_seed(seed)
    grad_sq = np.zeros(len(convs))
    for img in images:
        trunk.zero_grad(set_to_none=True)
        out = trunk(img[None].float())
        target = torch.randn(out.shape, generator=gen)
        (out * target).sum().backward()
        grad_sq += np.array([float(c.weight.grad.pow(2).sum()) for c in convs])
    trunk.zero_grad(set_to_none=True)
    weight_sq = np.array([float(c.weight.detach().pow(2).sum()) for c in convs])
    return grad_sq / len(images) / weight_sq


@torch.no_grad()
def _scale_pairs(convs: list[nn.Conv2d], factors: np.ndarray) -> None:
    for k, r in enumerate(factors):
        convs[k].weight.mul_(float(r))
        if convs[k].bias is not None:
            convs[k].bias.mul_(float(r))
        convs[k + 1].weight.div_(float(r))


def equalise_between_layers(trunk: nn.Sequential, images: Sequence[torch.Tensor], iterations: int = 10,
                            damping: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Step 2 in place; returns ``C_k`` (K,) before and after."""
    convs = [trunk[k] for k in _check_chain(trunk)]
    before = ratios = gradient_weight_ratios(trunk, images, seed)
    if len(convs) < 2:
        return before, ratios
    for _ in range(iterations):
        mean = np.exp(np.log(ratios).mean())
        _scale_pairs(convs, (ratios[:-1] / mean) ** (damping / 4))
        ratios = gradient_weight_ratios(trunk, images, seed)
    return before, ratios


def rescale_trunk(trunk: nn.Sequential, images: Sequence[torch.Tensor], iterations: int = 10,
                  damping: float = 0.5, seed: int = 0) -> RescaleReport:
    """Both steps in place on ``trunk`` (its training mode is restored afterwards)."""
    was_training = trunk.training
    trunk.eval()
    try:
        sigmas = normalise_within_layers(trunk, images)
        before, after = equalise_between_layers(trunk, images, iterations, damping, seed)
    finally:
        trunk.train(was_training)
    return RescaleReport(sigmas, before.tolist(), after.tolist())
