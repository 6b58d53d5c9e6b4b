"""Tower shapes, tied siamese weights, BN without scale/shift, weight files."""

import pytest
import torch
from torch import nn

from ctx_core.models.siamese import ContextPredictionNet
from ctx_core.models.towers import PaperTower, build_tower


@pytest.mark.parametrize("arch, patch, trunk_channels, feature_dim", [
    ("compact", 32, 96, 512), ("paper", 96, 256, 4096), ("resnet18", 64, 512, 512),
])
def test_tower_interface_shapes(arch, patch, trunk_channels, feature_dim):
    tower = build_tower(arch, patch).eval()
    x = torch.randn(3, 3, patch, patch)
    assert tower.trunk(x).shape[:2] == (3, trunk_channels) and tower.trunk_channels == trunk_channels
    assert tower.pooled(x).shape == (3, tower.pool5_dim)
    assert tower(x).shape == (3, feature_dim) and tower.feature_dim == feature_dim
    net = ContextPredictionNet(tower).eval()
    assert net.pairs(x, x).shape == (3, 8)


def test_paper_tower_follows_the_paper():
    t = PaperTower(96)
    convs = [m for m in t.trunk if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
        (96, 11, 4), (256, 5, 1), (384, 3, 1), (384, 3, 1), (256, 3, 1)]
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in t.trunk) == 2
    bns = [m for m in t.trunk if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 3 and not any(b.affine for b in bns)  # conv3-5: no learned scale/shift
    assert not t.fc6[1].affine and t.fc6[0].out_features == 4096


def test_siamese_towers_share_weights():
    net = ContextPredictionNet(build_tower("compact", 32))
    # one tower module: gradients from both patches land in the same parameters
    a, b = torch.randn(4, 3, 32, 32, requires_grad=True), torch.randn(4, 3, 32, 32)
    net.pairs(a, b).sum().backward()
    assert net.tower.trunk[0].weight.grad is not None
    assert len([m for m in net.modules() if isinstance(m, type(net.tower))]) == 1
