"""Encoder towers: one tower embeds one patch; the siamese net ties two of them.

Every tower exposes the same interface, which later stages (features,
discovery, detection) rely on:

- ``trunk``: the convolutional layers, ``(N, 3, P, P) -> (N, trunk_channels, h, w)``
  (the detection backbone);
- ``pool5``: spatial pooling after the trunk; ``pooled(x)`` gives
  ``(N, pool5_dim)`` flattened pool5 features;
- ``fc6``: ``(N, pool5_dim) -> (N, feature_dim)``; ``forward(x)`` returns fc6 features.

Batch norm without learned scale/shift follows the released deepcontext code:
with an affine transform the net can silence activations and collapse.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18

ARCHS = ("compact", "paper", "resnet18")


def _bn(channels: int, affine: bool, dims: int = 2) -> nn.Module:
    return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(channels, affine=affine)


class Tower(nn.Module):
    """Base: ``trunk`` -> ``pool5`` -> flatten -> ``fc6``."""

    arch: str
    patch_size: int
    trunk_channels: int
    pool5_dim: int
    feature_dim: int

    def __init__(self) -> None:
        super().__init__()
        self.trunk: nn.Module
        self.pool5: nn.Module
        self.fc6: nn.Module

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, P, P) -> (N, pool5_dim)."""
        return torch.flatten(self.pool5(self.trunk(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, P, P) -> fc6 features (N, feature_dim)."""
        return self.fc6(self.pooled(x))


class CompactTower(Tower):
    """A small AlexNet-shaped tower for CPU demos (default 32-px patches).

    conv1 5x5/2 (48) -> conv2 3x3 (96) -> pool -> conv3 (128) -> conv4 (128)
    -> conv5 (96) -> pool5 -> fc6 (512). About 72 MFLOP per 32-px patch forward
    (432 MFLOP per pair forward + backward).
    """

    def __init__(self, patch_size: int = 32, width: int = 1):
        super().__init__()
        self.arch, self.patch_size = "compact", patch_size
        c1, c2, c3, c4, c5 = (w * width for w in (48, 96, 128, 128, 96))
        self.trunk = nn.Sequential(
            nn.Conv2d(3, c1, 5, stride=2, padding=2, bias=False), _bn(c1, True), nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 3, padding=1, bias=False), _bn(c2, True), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1, bias=False), _bn(c3, False), nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, 3, padding=1, bias=False), _bn(c4, False), nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, 3, padding=1, bias=False), _bn(c5, False), nn.ReLU(inplace=True),
        )
        self.trunk_channels = c5
        side = max(1, patch_size // 8)
        self.pool5 = nn.AdaptiveMaxPool2d(min(4, side))
        self.pool5_dim = c5 * min(4, side) ** 2
        self.feature_dim = 512
        self.fc6 = nn.Sequential(nn.Linear(self.pool5_dim, 512, bias=False), _bn(512, False, 1), nn.ReLU(inplace=True))


class PaperTower(Tower):
    """The paper's AlexNet tower (96-px patches): conv1 11x11/4 (96) -> pool ->
    LRN -> conv2 5x5 (256) -> pool -> LRN -> conv3 (384) -> conv4 (384) ->
    conv5 (256) -> pool5 -> fc6 (4096); BN without scale/shift on conv3-5 and fc6."""

    def __init__(self, patch_size: int = 96):
        super().__init__()
        self.arch, self.patch_size = "paper", patch_size
        self.trunk = nn.Sequential(
            nn.Conv2d(3, 96, 11, stride=4, padding=5), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2), nn.LocalResponseNorm(5, 1e-4, 0.75),
            nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2), nn.LocalResponseNorm(5, 1e-4, 0.75),
            nn.Conv2d(256, 384, 3, padding=1, bias=False), _bn(384, False), nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, 3, padding=1, groups=2, bias=False), _bn(384, False), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1, groups=2, bias=False), _bn(256, False), nn.ReLU(inplace=True),
        )
        self.trunk_channels = 256
        with torch.no_grad():
            side = self.trunk(torch.zeros(1, 3, patch_size, patch_size)).shape[-1]
        pool_side = max(1, (side - 3) // 2 + 1) if side >= 3 else 1
        self.pool5 = nn.MaxPool2d(3, 2) if side >= 3 else nn.Identity()
        self.pool5_dim = 256 * pool_side**2
        self.feature_dim = 4096
        self.fc6 = nn.Sequential(nn.Linear(self.pool5_dim, 4096, bias=False), _bn(4096, False, 1), nn.ReLU(inplace=True))


class ResNet18Tower(Tower):
    """torchvision ResNet-18 (random init) up to layer4, global average pool, fc6 (512)."""

    def __init__(self, patch_size: int = 64):
        super().__init__()
        self.arch, self.patch_size = "resnet18", patch_size
        net = resnet18(weights=None)
        self.trunk = nn.Sequential(
            net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4
        )
        self.trunk_channels = 512
        self.pool5 = nn.AdaptiveAvgPool2d(1)
        self.pool5_dim = 512
        self.feature_dim = 512
        self.fc6 = nn.Sequential(nn.Linear(512, 512, bias=False), _bn(512, False, 1), nn.ReLU(inplace=True))


def build_tower(arch: str, patch_size: int) -> Tower:
    """A freshly initialised tower of ``arch`` for ``patch_size``-px patches."""
    if arch == "compact":
        return CompactTower(patch_size)
    if arch == "paper":
        return PaperTower(patch_size)
    if arch == "resnet18":
        return ResNet18Tower(patch_size)
    raise ValueError(f"arch {arch!r}: expected one of {', '.join(ARCHS)}")
