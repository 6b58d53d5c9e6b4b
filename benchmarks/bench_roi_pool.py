"""The box head's RoI pooling (issue 17): torchvision's ``MultiScaleRoIAlign`` against ours, in one run.

Forward + backward (gradient w.r.t. the features) of the detector's ``box_roi_pool`` at its real
shapes: a batch of ``--images`` images of 144 x 192 px, the trunk's stride-4 feature map (36 x 48,
96 channels, channels-last as ``TrunkBackbone`` returns it), ``--rois`` RoIs per image (the box
head's ``rois_per_image``), 7 x 7 output, sampling ratio 2:

- torchvision's ``MultiScaleRoIAlign`` (the reference);
- ours, ``ctx_core.detection.roi_pool.SingleLevelRoIAlign`` (one ``embedding_bag`` gather);
- the issue's first idea, kept here for the record: one ``grid_sample`` per image over all its
  RoIs' sample points, then ``avg_pool2d``.

Outputs and gradients are checked against torchvision's first (max |diff| printed). Median
seconds of ``--reps`` repetitions after a warm-up, the three interleaved; ratios from the same run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_roi_pool.py [--reps 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torchvision.ops import MultiScaleRoIAlign

from ctx_core.detection.roi_pool import SingleLevelRoIAlign, infer_scale
from cpu import cpu_model  # benchmarks/cpu.py (scripts run from benchmarks/)


def proposals(n: int, height: int, width: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` boxes inside a ``height x width`` image, sides 4 px to the whole image."""
    side = torch.rand(n, 2, generator=gen) * torch.tensor([width - 4.0, height - 4.0]) + 4.0
    corner = torch.rand(n, 2, generator=gen) * (torch.tensor([float(width), float(height)]) - side)
    return torch.cat([corner, corner + side], dim=1)


def grid_sample_axis(starts: torch.Tensor, ends: torch.Tensor, bins: int, s: int, size: int) -> torch.Tensor:
    """``(R, bins * s)`` grid_sample coordinates (``align_corners=False``) of roi_align's samples on one axis:
    clamped to ``[0, size - 1]``, or pixel -2 (all four neighbours zero padding) outside ``[-1, size]``."""
    bin_size = ((ends - starts).clamp(min=1.0) / bins)[:, None, None]
    p = torch.arange(bins, dtype=starts.dtype)[None, :, None]
    i = torch.arange(s, dtype=starts.dtype)[None, None, :] + 0.5
    pos = (starts[:, None, None] + p * bin_size + i * bin_size / s).reshape(len(starts), bins * s)
    pos = torch.where((pos < -1.0) | (pos > size), torch.full_like(pos, -2.0), pos.clamp(0.0, size - 1))
    return (2.0 * pos + 1.0) / size - 1.0


class GridSampleRoIAlign(torch.nn.Module):
    """roi_align by one ``grid_sample`` per image (its RoIs' sample rows stacked) + ``avg_pool2d(s)``."""

    def __init__(self, out: int, s: int):
        super().__init__()
        self.out, self.s, self.scale = out, s, None

    def forward(self, x, boxes, shapes):
        feature, out, s = x["0"], self.out, self.s
        self.scale = self.scale or infer_scale(feature, shapes)
        channels, height, width = feature.shape[1:]
        pooled = []
        for k, b in enumerate(boxes):
            r = b.detach() * self.scale
            gx = grid_sample_axis(r[:, 0], r[:, 2], out, s, width)[:, None, :].expand(len(r), out * s, out * s)
            gy = grid_sample_axis(r[:, 1], r[:, 3], out, s, height)[:, :, None].expand(len(r), out * s, out * s)
            grid = torch.stack([gx, gy], dim=-1).reshape(1, len(r) * out * s, out * s, 2)
            samples = F.grid_sample(feature[k:k + 1], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            pooled.append(F.avg_pool2d(samples, s).reshape(channels, len(r), out, out).transpose(0, 1))
        return torch.cat(pooled)


def fwd_bwd_seconds(pools: dict, feature: torch.Tensor, boxes, shapes, grad: torch.Tensor,
                    reps: int) -> dict[str, float]:
    """Median seconds of forward + backward for each pool, the pools interleaved rep by rep."""
    times: dict[str, list[float]] = {name: [] for name in pools}
    for rep in range(reps + 1):
        for name, pool in pools.items():
            t = time.perf_counter()
            out = pool({"0": feature}, boxes, shapes)
            torch.autograd.grad(out, feature, grad)
            if rep:  # the first is a warm-up
                times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--rois", type=int, default=128, help="RoIs per image")
    parser.add_argument("--channels", type=int, default=96)
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    height, width, stride, out = 144, 192, 4, 7
    print(f"CPU: {cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}\n")
    gen = torch.Generator().manual_seed(0)
    feature = torch.randn(args.images, args.channels, height // stride, width // stride, generator=gen)
    feature = feature.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    boxes = [proposals(args.rois, height, width, gen) for _ in range(args.images)]
    shapes = [(height, width)] * args.images
    pools = {"torchvision MultiScaleRoIAlign": MultiScaleRoIAlign(featmap_names=["0"], output_size=out,
                                                                   sampling_ratio=2),
             "ours: SingleLevelRoIAlign (embedding_bag)": SingleLevelRoIAlign("0", out, 2),
             "grid_sample + avg_pool2d": GridSampleRoIAlign(out, 2)}
    ref = next(iter(pools.values()))({"0": feature}, boxes, shapes)
    grad = torch.randn(ref.shape, generator=gen)
    g_ref, = torch.autograd.grad(ref, feature, grad)
    diffs = {}
    for name, pool in pools.items():
        new = pool({"0": feature}, boxes, shapes)
        g_new, = torch.autograd.grad(new, feature, grad)
        diffs[name] = ((ref - new).abs().max().item(), (g_ref - g_new).abs().max().item())

    seconds = fwd_bwd_seconds(pools, feature, boxes, shapes, grad, args.reps)
    base = seconds["torchvision MultiScaleRoIAlign"]
    print(f"{args.images} images of {height} x {width} px, features {args.channels} x {height // stride} x "
          f"{width // stride} (channels-last), {args.images * args.rois} RoIs, {out} x {out} out, sampling ratio 2; "
          f"median of {args.reps}, interleaved\n")
    print("| RoI pooling | forward + backward, ms | torchvision / this | max abs diff: forward, gradient |\n"
          "| --- | ---: | ---: | ---: |")
    for name, s in seconds.items():
        print(f"| {name} | {s * 1e3:.2f} | {base / s:.2f}x | {diffs[name][0]:.1e}, {diffs[name][1]:.1e} |")


if __name__ == "__main__":
    main()
