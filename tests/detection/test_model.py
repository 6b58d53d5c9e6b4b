"""Folding BN, the detector's shape, and the data-dependent rescaling checked by plain computation."""

import numpy as np
import pytest
import torch
from torch import nn

from ctx_core.config import DetectionConfig
from ctx_core.detection.model import TrunkBackbone, build_detector, fold_batchnorm
from ctx_core.detection.rescale import (
    RescaleError, equalise_between_layers, gradient_weight_ratios, normalise_within_layers,
)
from ctx_core.models.towers import build_tower


def trained_looking_tower():
    """A compact tower whose BN layers hold non-trivial statistics and affine terms."""
    torch.manual_seed(0)
    tower = build_tower("compact", 32)
    tower.train()
    with torch.no_grad():
        for _ in range(3):
            tower.trunk(torch.randn(4, 3, 32, 32) * 40 + 5)
        for m in tower.trunk.modules():
            if isinstance(m, nn.BatchNorm2d) and m.affine:
                m.weight.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.5, 0.5)
    return tower.eval()


def calibration(n=3, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(3, 40 + 8 * k, 56, generator=gen) * 2 - 1 for k in range(n)]


def test_folded_trunk_computes_the_eval_mode_trunk():
    tower = trained_looking_tower()
    folded = fold_batchnorm(tower.trunk)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, 48, 64) * 40
    with torch.no_grad():
        torch.testing.assert_close(folded(x), tower.trunk(x), rtol=1e-4, atol=1e-4)


def test_detector_shapes_with_and_without_fpn():
    tower = build_tower("compact", 32)
    for fpn in (False, True):
        cfg = DetectionConfig(fpn=fpn, min_size=64, max_size=96, head_dim=16, rpn_proposals=20)
        torch.manual_seed(0)
        model = build_detector(tower, cfg, 3, [0.5] * 3, [0.25] * 3).eval()
        with torch.no_grad():
            out = model([torch.rand(3, 60, 80)])
        assert out[0]["boxes"].shape[1] == 4 and set(out[0]["labels"].tolist()) <= {1, 2, 3}
    backbone = TrunkBackbone(fold_batchnorm(tower.trunk), tower.trunk_channels, fpn=True)
    feats = backbone(torch.rand(1, 3, 64, 64))
    assert [f.shape[-1] for f in feats.values()] == [32, 16, 8] and all(f.shape[1] == 96 for f in feats.values())


def plain_conv_outputs(trunk, images):
    """Each conv's output over ``images``, per channel, by stepping through the layers by hand."""
    per_conv = []
    for img in images:
        x, k = img[None], 0
        for layer in trunk:
            x = layer(x)
            if isinstance(layer, nn.Conv2d):
                if len(per_conv) <= k:
                    per_conv.append([])
                per_conv[k].append(x[0].detach().numpy().reshape(x.shape[1], -1).copy())  # the next ReLU is in place
                k += 1
    return [np.concatenate(chunks, axis=1) for chunks in per_conv]


def test_within_layer_gives_unit_variance_per_channel():
    trunk = fold_batchnorm(trained_looking_tower().trunk)
    images = calibration()
    before = plain_conv_outputs(trunk, images)
    assert max(abs(np.std(b, axis=1) - 1).max() for b in before) > 0.2
    normalise_within_layers(trunk, images)
    for acts in plain_conv_outputs(trunk, images):
        np.testing.assert_allclose(acts.mean(axis=1), 0, atol=1e-4)
        np.testing.assert_allclose(acts.std(axis=1), 1, atol=1e-3)


def test_between_layer_equalises_ratios_without_changing_the_function():
    trunk = fold_batchnorm(trained_looking_tower().trunk)
    images = calibration()
    normalise_within_layers(trunk, images)
    with torch.no_grad():
        reference = [trunk(img[None]) for img in images]
    before, after = equalise_between_layers(trunk, images, iterations=10, damping=0.5)
    assert np.ptp(np.log(after)) < 0.25 * np.ptp(np.log(before))
    np.testing.assert_allclose(after, gradient_weight_ratios(trunk, images))
    with torch.no_grad():
        for img, ref in zip(images, reference):
            torch.testing.assert_close(trunk(img[None]), ref, rtol=1e-4, atol=1e-4)


def test_rescaling_refuses_residual_trunks():
    trunk = fold_batchnorm(build_tower("resnet18", 64).trunk)
    with pytest.raises(RescaleError, match="plain chain of conv layers.*Sequential"):
        normalise_within_layers(trunk, calibration(1))


def test_scratch_init_keeps_activations_at_unit_scale():
    from ctx_core.detection.model import he_init

    trunk = fold_batchnorm(build_tower("compact", 32).trunk)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        default_rms = trunk(x).pow(2).mean().sqrt()
        he_init(trunk, seed=0)
        he_rms = trunk(x).pow(2).mean().sqrt()
    assert default_rms < 0.05 and 0.5 < he_rms < 2.0


def test_first_conv_absorbs_the_pretraining_input_transform():
    from ctx_core.detection.model import absorb_input_transform
    from ctx_core.pretext.augment import project_colour

    trunk = fold_batchnorm(trained_looking_tower().trunk)
    x = torch.randn(2, 3, 40, 48)
    with torch.no_grad():
        expected = trunk(project_colour(x) * 50)
        absorb_input_transform(trunk, 50, "projection")
        torch.testing.assert_close(trunk(x), expected, rtol=1e-4, atol=1e-3)
