"""The context-prediction network: two towers with tied weights and a pair head.

fc6 features of both patches are concatenated, then fc7 -> fc8 -> fc9 (8
logits, one per relative position). The tower embeds a batch of patches once
and the head reads the pairs by index: both towers share one set of weights
by construction, and a patch used by several pairs of a grid (up to 8 of
the 40 ordered pairs) is embedded once.
"""

from __future__ import annotations

import torch
from torch import nn

from ctx_core.models.towers import Tower


class PairHead(nn.Module):
    """(N, 2 * feature_dim) -> (N, 8) logits; BN without scale/shift on fc7 as in deepcontext."""

    def __init__(self, feature_dim: int, hidden: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(2 * feature_dim, hidden, bias=False), nn.BatchNorm1d(hidden, affine=False), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, 8),
        )

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        return self.layers(pair)


class ContextPredictionNet(nn.Module):
    """``forward(patches, pair_index)``: (M, 3, P, P) patches and (N, 2) rows of the
    first and second patch of each pair -> (N, 8) logits; ``pairs(first, second)``
    for two aligned (N, 3, P, P) batches."""

    def __init__(self, tower: Tower, hidden: int | None = None):
        super().__init__()
        self.tower = tower
        self.head = PairHead(tower.feature_dim, hidden or tower.feature_dim)

    def forward(self, patches: torch.Tensor, pair_index: torch.Tensor) -> torch.Tensor:
        feats = self.tower(patches)
        return self.head(torch.cat([feats[pair_index[:, 0]], feats[pair_index[:, 1]]], dim=1))

    def pairs(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """Logits for pairs given as two aligned batches of patches."""
        n = first.shape[0]
        index = torch.stack([torch.arange(n), torch.arange(n, 2 * n)], dim=1).to(first.device)
        return self(torch.cat([first, second]), index)
