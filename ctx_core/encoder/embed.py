"""Feature functions of an encoder and its baselines, shared by every stage that
embeds patches (``extract``, ``probe``, the position audit of ``pretrain``):
the encoder's tower, a random-init tower of the same architecture, and raw
pixels. Each maps preprocessed patches (N, 3, P, P) to float32 features (N, D)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ctx_core.errors import UserError
from ctx_core.models.towers import Tower, build_tower


@dataclass(frozen=True)
class Embedder:
    """``embed``: float32 (N, 3, P, P) -> float32 (N, dim)."""

    name: str
    dim: int
    embed: Callable[[torch.Tensor], torch.Tensor]


def pick_device(name: str, setting: str = "features.device") -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{setting} = 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def random_init_tower(arch: str, patch_size: int, seed: int) -> Tower:
    """A freshly initialised tower; the same ``seed`` gives the same weights."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return build_tower(arch, patch_size)
    finally:
        torch.random.set_rng_state(state)


def tower_embedder(name: str, tower: Tower, layer: str, device: torch.device, amp: bool) -> Embedder:
    """fc6 (``forward``) or flattened pool5 (``pooled``) features of ``tower`` in eval mode.

    Batches go in channels-last (NHWC): oneDNN's convolutions then skip a layout change per
    layer; on a 2-core AVX2-only AMD EPYC the tower's forward ran 1.3-2.5x faster
    (``benchmarks/bench_probe.py``); features agree to ~1e-6."""
    tower = tower.to(device).eval()
    head = tower.forward if layer == "fc6" else tower.pooled
    dim = tower.feature_dim if layer == "fc6" else tower.pool5_dim

    @torch.inference_mode()
    def embed(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device, non_blocking=True)
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            return head(x).float().cpu()

    return Embedder(name, dim, embed)


def raw_pixel_embedder(side: int) -> Embedder:
    """The preprocessed patch area-downsampled to ``side`` x ``side``, flattened: (N, 3 * side**2)."""

    def embed(x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x.float(), side).flatten(1)

    return Embedder("raw_pixels", 3 * side * side, embed)
