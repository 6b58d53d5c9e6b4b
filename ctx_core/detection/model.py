"""Faster R-CNN on the context encoder's trunk.

The backbone is the tower's ``trunk`` (``(N, 3, H, W) -> (N, C, H/s, W/s)``,
``C = tower.trunk_channels``), with its batch-norm layers folded into the
convolutions before them (:func:`fold_batchnorm`) for every init alike:

- it is exactly the eval-mode network the encoder computes, with no running
  statistics left to drift on 2-8 image batches;
- the result is a plain conv + bias + ReLU stack, which is what the
  data-dependent rescaling (``rescale.py``) is defined on;
- ``scratch`` folds a fresh tower's identity statistics, so all inits train the
  very same architecture.

Only the trunk is transferred: the RPN and the box head are new, as in the
paper (which replaced fc6 and above for detection).
"""

from __future__ import annotations

from collections import OrderedDict

import copy

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ctx_core.config import DetectionConfig
from ctx_core.detection.roi_pool import SingleLevelRoIAlign
from ctx_core.models.towers import Tower
from ctx_core.encoder.preprocess import colour_matrix


def fold_batchnorm(trunk: nn.Sequential) -> nn.Sequential:
    """A copy of ``trunk`` with each BatchNorm2d folded into the conv before it.

    For a conv ``y = W x + c`` followed by eval-mode BN
    ``(y - mu) / sqrt(var + eps) * g + b``, the folded conv has weights
    ``W * g / sqrt(var + eps)`` and bias ``(c - mu) * g / sqrt(var + eps) + b``
    (``g = 1, b = 0`` without affine). BN nested inside blocks (ResNet) cannot
    be folded into a chain and becomes ``FrozenBatchNorm2d``: the same eval-mode map.
    """
    layers: list[nn.Module] = []
    for layer in copy.deepcopy(trunk).children():
        if isinstance(layer, nn.BatchNorm2d) and layers and isinstance(layers[-1], nn.Conv2d):
            layers[-1] = _fold(layers[-1], layer)
        else:
            layers.append(_freeze_nested_bn(layer))
    return nn.Sequential(*layers)


@torch.no_grad()
def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    scale = torch.rsqrt(bn.running_var + bn.eps)
    gamma = bn.weight if bn.affine else torch.ones_like(scale)
    beta = bn.bias if bn.affine else torch.zeros_like(scale)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True)
    fused.weight.copy_(conv.weight * (gamma * scale)[:, None, None, None])
    old_bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
    fused.bias.copy_((old_bias - bn.running_mean) * gamma * scale + beta)
    return fused


def _freeze_nested_bn(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, module.eps)
        frozen.running_mean.copy_(module.running_mean)
        frozen.running_var.copy_(module.running_var)
        if module.affine:
            frozen.weight.copy_(module.weight.detach())
            frozen.bias.copy_(module.bias.detach())
        return frozen
    for name, child in module.named_children():
        setattr(module, name, _freeze_nested_bn(child))
    return module


def conv_layers(trunk: nn.Module) -> list[nn.Conv2d]:
    """The Conv2d layers of ``trunk`` in forward order."""
    return [m for m in trunk.modules() if isinstance(m, nn.Conv2d)]


class TrunkBackbone(nn.Module):
    """The trunk as a torchvision backbone: ``{"0": (N, C, H/s, W/s)}``, ``out_channels = C``.

    With ``fpn``, the trunk is tapped before each stride change and at its end,
    and a feature pyramid (plus one max-pooled level) of ``C`` channels each is built.
    """

    def __init__(self, trunk: nn.Sequential, trunk_channels: int, fpn: bool = False):
        super().__init__()
        self.trunk = trunk.to(memory_format=torch.channels_last)
        self.out_channels = trunk_channels
        self.taps: list[int] = []
        self.fpn: FeaturePyramidNetwork | None = None
        if fpn:
            self.taps, channels = self._stage_ends(trunk)
            self.fpn = FeaturePyramidNetwork(channels, trunk_channels, extra_blocks=LastLevelMaxPool())

    @staticmethod
    def _stage_ends(trunk: nn.Sequential) -> tuple[list[int], list[int]]:
        """Indices of the last layer at each resolution (after the first stride), and their channels."""
        sides, channels = [], []
        with torch.no_grad():
            x = torch.zeros(1, 3, 64, 64)
            for layer in trunk:
                x = layer(x)
                sides.append(x.shape[-1])
                channels.append(x.shape[1])
        taps = [k for k in range(len(sides)) if k == len(sides) - 1 or sides[k + 1] != sides[k]]
        return taps, [channels[k] for k in taps]

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        # channels-last convolutions run ~4x faster on the CPU (oneDNN) and use tensor cores on CUDA
        x = x.contiguous(memory_format=torch.channels_last)
        if self.fpn is None:
            return OrderedDict([("0", self.trunk(x))])
        feats = OrderedDict()
        for k, layer in enumerate(self.trunk):
            x = layer(x)
            if k in self.taps:
                feats[str(len(feats))] = x
        return self.fpn(feats)


def train_min_sizes(cfg: DetectionConfig) -> tuple[int, ...]:
    """Shorter-side sizes drawn per training image (scale jitter); the last one is the test size."""
    lo, hi = cfg.scale_jitter
    sizes = {round(cfg.min_size * (lo + (hi - lo) * k / 4)) for k in range(5)} - {cfg.min_size}
    return (*sorted(sizes), cfg.min_size)


def build_detector(tower: Tower, cfg: DetectionConfig, num_classes: int, image_mean: list[float],
                   image_std: list[float]) -> FasterRCNN:
    """Faster R-CNN over ``tower``'s folded trunk for ``num_classes`` object classes (+ background).

    ``image_mean``/``image_std``: per-channel, for pixels in [0, 1].
    """
    backbone = TrunkBackbone(fold_batchnorm(tower.trunk), tower.trunk_channels, fpn=cfg.fpn)
    if cfg.fpn:
        # the RPN head predicts the same anchors at every level: one size per
        # level (small to large), the max-pooled extra level included
        n_maps, a = len(backbone.taps) + 1, cfg.anchor_sizes
        sizes = tuple((a[round(k * (len(a) - 1) / (n_maps - 1))],) for k in range(n_maps))
        levels = [str(k) for k in range(len(backbone.taps))]
    else:
        sizes, levels = (tuple(cfg.anchor_sizes),), ["0"]
    anchors = AnchorGenerator(sizes=sizes, aspect_ratios=(tuple(cfg.aspect_ratios),) * len(sizes))
    if cfg.fpn:
        roi_pool = MultiScaleRoIAlign(featmap_names=levels, output_size=cfg.roi_size, sampling_ratio=2)
    else:  # torchvision's numbers, with a vectorised CPU backward (issue 17)
        roi_pool = SingleLevelRoIAlign(levels[0], output_size=cfg.roi_size, sampling_ratio=2)
    return FasterRCNN(
        backbone,
        num_classes=None,
        min_size=train_min_sizes(cfg),
        max_size=cfg.max_size,
        image_mean=image_mean,
        image_std=image_std,
        rpn_anchor_generator=anchors,
        box_roi_pool=roi_pool,
        box_head=TwoMLPHead(tower.trunk_channels * cfg.roi_size**2, cfg.head_dim),
        box_predictor=FastRCNNPredictor(cfg.head_dim, num_classes + 1),
        box_score_thresh=cfg.score_threshold,
        box_detections_per_img=cfg.detections_per_image,
        rpn_pre_nms_top_n_train=cfg.rpn_proposals * 2, rpn_post_nms_top_n_train=cfg.rpn_proposals,
        rpn_pre_nms_top_n_test=cfg.rpn_proposals, rpn_post_nms_top_n_test=cfg.rpn_proposals // 2,
        box_batch_size_per_image=cfg.rois_per_image,
    )



@torch.no_grad()
def absorb_input_transform(trunk: nn.Sequential, scale: float, chroma: str) -> None:
    """Fold the pretraining input transform into the first conv (in place): ``W <- scale * W M``.

    The encoder was pretrained on patches scaled to RMS ``patch_rms`` (50)
    and, for ``chroma`` ``projection`` or ``grayscale``, with colours mapped
    by a 3x3 matrix ``M``; it never learned the colour directions ``M``
    removes, so feeding them would add untrained responses. The detector
    feeds unit-RMS colour images: with ``scale`` and ``M`` in the first conv
    the trunk computes the encoder's function on them, while gradients keep
    the scale of unit inputs and fine-tuning may still learn all colours.
    """
    conv = conv_layers(trunk)[0]
    matrix = colour_matrix(chroma)
    weight = torch.einsum("odhw,dc->ochw", conv.weight, matrix.to(conv.weight))
    conv.weight.copy_(weight * scale)


@torch.no_grad()
def he_init(trunk: nn.Module, seed: int) -> None:
    """Random init for ``scratch``: He-normal conv weights (fan-in, ReLU gain), zero biases (in place).

    PyTorch's default conv init shrinks activations ~2x per conv+ReLU
    (~70x over the compact trunk's five), which would leave the RPN
    without a signal; He init keeps them at unit scale, as a fair scratch baseline should.
    """
    gen = torch.Generator().manual_seed(seed)
    for conv in conv_layers(trunk):
        fan_in = conv.weight[0].numel()
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
        if conv.bias is not None:
            conv.bias.zero_()
