"""The context-prediction network: two towers with tied weights and a pair head.

fc6 features of both patches are concatenated, then fc7 -> fc8 -> fc9 (8
logits, one per relative position). Both patches go through the tower in one
batch, which ties the weights and halves the number of kernel launches.
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
    """``forward(first, second)``: two (N, 3, P, P) batches -> (N, 8) logits."""

    def __init__(self, tower: Tower, hidden: int | None = None):
        super().__init__()
        self.tower = tower
        self.head = PairHead(tower.feature_dim, hidden or tower.feature_dim)

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        n = first.shape[0]
        feats = self.tower(torch.cat([first, second]))
        return self.head(torch.cat([feats[:n], feats[n:]], dim=1))
