"""RoI Align on one feature level as one weighted gather: torchvision's numbers, a vectorised CPU backward.

torchvision's CPU ``roi_align`` backward is a scalar loop over RoIs, channels, bins and samples
(issue 17's profile: 24 % of a detection training step). :func:`roi_align_bags` computes the same
function, ``torchvision.ops.roi_align(..., sampling_ratio=s, aligned=False)``:

- per RoI (feature coordinates ``box * scale``): width and height clamped to >= 1, bins of
  ``size / out``, ``s x s`` sample points per bin at ``start + p * bin + (i + 0.5) * bin / s``;
- a sample with ``y < -1`` or ``y > H`` (likewise ``x``) is 0; otherwise its coordinate is clamped to
  ``[0, H - 1]`` (torchvision's ``y <= 0 -> 0`` and ``y_low >= H - 1 -> H - 1``) and interpolated
  bilinearly from its pixels ``floor(y)`` and ``min(floor(y) + 1, H - 1)``;
- a bin's value is the mean of its ``s x s`` samples.

Bilinear weights factor into a row and a column weight, and a sample outside the map zeroes its
row or its column weight, so each output bin is a fixed weighted sum of ``4 s^2`` feature pixels
(``2 s`` row taps x ``2 s`` column taps, weights ``w_y w_x / s^2``). All bins of all RoIs are one
``embedding_bag`` over the features as a ``(N * H * W, C)`` table: a gather of ``C``-wide rows
(free of copies for the trunk's channels-last features), vectorised over channels forward and
backward. No gradient flows to the boxes (as in torchvision).

Why not ``grid_sample`` + ``avg_pool2d`` (the issue's first idea): on the detector's shapes, in a
first (busy-machine) measurement on one core, it was no faster than torchvision forward + backward
(its backward and the pooling of the 4x more samples cost about what torchvision's backward does);
``benchmarks/bench_roi_pool.py`` times all three.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign


def infer_scale(feature: Tensor, image_shapes: list[tuple[int, int]]) -> float:
    """The feature map's scale as ``MultiScaleRoIAlign`` infers it: the power of 2 nearest to
    feature height / largest image height."""
    if not image_shapes:
        raise ValueError("images list should not be empty")
    height = max(shape[0] for shape in image_shapes)
    approx = float(feature.shape[-2]) / float(height)
    return 2 ** float(torch.tensor(approx).log2().round())


def axis_taps(starts: Tensor, ends: Tensor, bins: int, samples: int, size: int) -> tuple[Tensor, Tensor]:
    """Pixel indices and weights ``(R, bins, 2 * samples)`` of each bin along one axis.

    ``starts``/``ends``: ``(R,)`` RoI bounds in feature pixels. Sample positions are computed in the
    order of operations of torchvision's kernel; weights include the ``1 / samples`` of the mean.
    """
    bin_size = ((ends - starts).clamp(min=1.0) / bins)[:, None, None]
    p = torch.arange(bins, device=starts.device, dtype=starts.dtype)[None, :, None]
    i = torch.arange(samples, device=starts.device, dtype=starts.dtype)[None, None, :] + 0.5
    pos = starts[:, None, None] + p * bin_size + i * bin_size / samples  # (R, bins, samples)
    inside = ((pos >= -1.0) & (pos <= size)).to(pos.dtype) / samples
    pos = pos.clamp(0.0, size - 1)
    low = pos.floor()
    frac = pos - low
    low = low.long()
    high = (low + 1).clamp(max=size - 1)
    return torch.cat([low, high], dim=2), torch.cat([(1.0 - frac) * inside, frac * inside], dim=2)


def roi_align_bags(feature: Tensor, boxes: list[Tensor], output_size: tuple[int, int], scale: float,
                   sampling_ratio: int) -> Tensor:
    """``torchvision.ops.roi_align(feature, boxes, output_size, scale, sampling_ratio, aligned=False)``.

    ``feature``: ``(N, C, H, W)``; ``boxes``: N tensors ``(R_i, 4)`` of ``(x1, y1, x2, y2)`` in image
    pixels. Returns ``(sum R_i, C, out_h, out_w)``, the RoIs in image order (strided channels-last).
    """
    if sampling_ratio <= 0:
        raise ValueError("only a fixed sampling_ratio > 0 is supported (not torchvision's adaptive one)")
    out_h, out_w = output_size
    n, channels, height, width = feature.shape
    orig_dtype = feature.dtype
    if orig_dtype not in (torch.float32, torch.float64):
        feature = feature.float()  # as torchvision's roi_align runs under autocast
    with torch.no_grad():
        rois = torch.cat([b.to(feature.dtype) for b in boxes]) * scale
        image = torch.cat([torch.full((len(b),), k, dtype=torch.long, device=feature.device)
                           for k, b in enumerate(boxes)])
        ix, wx = axis_taps(rois[:, 0], rois[:, 2], out_w, sampling_ratio, width)  # (K, out_w, 2s)
        iy, wy = axis_taps(rois[:, 1], rois[:, 3], out_h, sampling_ratio, height)  # (K, out_h, 2s)
        k, taps = len(rois), (2 * sampling_ratio) ** 2
        index = (image[:, None, None, None, None] * (height * width) + iy[:, :, None, :, None] * width
                 + ix[:, None, :, None, :]).reshape(k * out_h * out_w, taps)
        weight = (wy[:, :, None, :, None] * wx[:, None, :, None, :]).reshape(k * out_h * out_w, taps)
    table = feature.permute(0, 2, 3, 1).reshape(n * height * width, channels)
    bins = F.embedding_bag(index, table, per_sample_weights=weight, mode="sum")  # (K * out_h * out_w, C)
    return bins.view(k, out_h, out_w, channels).permute(0, 3, 1, 2).to(orig_dtype)


class SingleLevelRoIAlign(MultiScaleRoIAlign):
    """``MultiScaleRoIAlign`` over a single feature level (Faster R-CNN's ``box_roi_pool``, which
    FasterRCNN type-checks), computed by :func:`roi_align_bags`.

    The scale is inferred on the first call and kept in ``scales``, as ``MultiScaleRoIAlign`` does.
    """

    def __init__(self, featmap_name: str, output_size: int | tuple[int, int], sampling_ratio: int):
        if sampling_ratio <= 0:
            raise ValueError("sampling_ratio must be > 0")
        super().__init__(featmap_names=[featmap_name], output_size=output_size, sampling_ratio=sampling_ratio)

    @property
    def scale(self) -> float | None:
        return None if self.scales is None else self.scales[0]

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        feature = x[self.featmap_names[0]]
        if self.scales is None:
            self.scales = [infer_scale(feature, image_shapes)]
        return roi_align_bags(feature, boxes, self.output_size, self.scales[0], self.sampling_ratio)
