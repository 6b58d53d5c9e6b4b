"""Our single-level RoI Align against torchvision's MultiScaleRoIAlign: same outputs, same feature gradients."""

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign

from ctx_core.config import DetectionConfig
from ctx_core.detection.model import build_detector
from ctx_core.detection.roi_pool import SingleLevelRoIAlign, infer_scale
from ctx_core.models.towers import build_tower


def random_boxes(n, height, width, gen):
    """``n`` boxes in image pixels: a third tiny (< 1 feature pixel), some crossing or outside the border."""
    corner = torch.rand(n, 2, generator=gen) * torch.tensor([width * 1.2, height * 1.2]) - torch.tensor([0.1 * width, 0.1 * height])
    side = torch.rand(n, 2, generator=gen) * torch.tensor([width * 0.6, height * 0.6])
    side[: n // 3] *= 0.02
    return torch.cat([corner, corner + side], dim=1)


def both(feature, boxes, shapes, output_size=7, sampling_ratio=2):
    """(torchvision's output, ours, torchvision's feature gradient, ours) for a random output gradient."""
    tv = MultiScaleRoIAlign(["0"], output_size, sampling_ratio)
    ours = SingleLevelRoIAlign("0", output_size, sampling_ratio)
    ref, new = tv({"0": feature}, boxes, shapes), ours({"0": feature}, boxes, shapes)
    assert ours.scale == tv.scales[0]
    grad = torch.randn(ref.shape, generator=torch.Generator().manual_seed(5), dtype=ref.dtype)
    g_ref, = torch.autograd.grad(ref, feature, grad)
    g_new, = torch.autograd.grad(new, feature, grad)
    return ref, new, g_ref, g_new


@pytest.mark.parametrize("channels_last", [False, True])
def test_matches_torchvision_on_random_boxes(channels_last):
    gen = torch.Generator().manual_seed(0)
    shapes = [(36, 46), (40, 33), (38, 48)]  # padded to 40 x 48 -> stride-4 features 10 x 12
    feature = torch.randn(3, 5, 10, 12, generator=gen)
    if channels_last:
        feature = feature.contiguous(memory_format=torch.channels_last)
    feature.requires_grad_(True)
    boxes = [random_boxes(17, 40, 48, gen), torch.zeros(0, 4), random_boxes(6, 40, 48, gen)]
    boxes[0][0] = torch.tensor([0.0, 0.0, 48.0, 40.0])  # the whole image, touching every border
    ref, new, g_ref, g_new = both(feature, boxes, shapes)
    assert new.shape == ref.shape == (23, 5, 7, 7)
    torch.testing.assert_close(new, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(g_new, g_ref, rtol=0, atol=1e-5)
    assert g_ref.abs().max() > 0.1  # the comparison is not of zeros


def test_samples_exactly_on_the_edges_of_the_valid_range():
    """Samples at y = -1 and y = H (kept, clamped) and just beyond (zero), in float64; non-square output."""
    gen = torch.Generator().manual_seed(1)
    feature = torch.randn(1, 3, 8, 9, generator=gen, dtype=torch.float64, requires_grad=True)
    # 7 bins of 1 px, samples at start + p + 0.25 / 0.75: first -1.0 (y) / last 9.0 (x), and beyond
    boxes = [torch.tensor([[-1.25, -1.25, 5.75, 5.75], [2.25, 1.25, 9.25, 8.25], [-1.5, -1.5, 5.5, 5.5],
                           [2.5, 1.5, 9.5, 8.5], [3.0, 3.0, 3.2, 3.1]], dtype=torch.float64)]
    ref, new, g_ref, g_new = both(feature, boxes, [(8, 9)], output_size=(7, 7))
    torch.testing.assert_close(new, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(g_new, g_ref, rtol=0, atol=1e-12)
    ref, new, g_ref, g_new = both(feature, boxes, [(8, 9)], output_size=(3, 5), sampling_ratio=3)
    torch.testing.assert_close(new, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(g_new, g_ref, rtol=0, atol=1e-12)


def test_no_rois_at_all_and_the_inferred_scale():
    feature = torch.randn(2, 4, 9, 12, requires_grad=True)
    ref, new, g_ref, g_new = both(feature, [torch.zeros(0, 4), torch.zeros(0, 4)], [(36, 44), (30, 48)])
    assert new.shape == ref.shape == (0, 4, 7, 7) and not g_new.any()
    assert infer_scale(feature, [(36, 44), (30, 48)]) == 0.25
    assert infer_scale(torch.zeros(1, 1, 5, 5), [(37, 37)]) == 0.125


def test_detector_uses_it_without_fpn_and_trains_as_with_torchvision():
    tower = build_tower("compact", 32)
    cfg = DetectionConfig(fpn=False, min_size=64, max_size=96, head_dim=16, rpn_proposals=20, rois_per_image=16)
    torch.manual_seed(0)
    model = build_detector(tower, cfg, 3, [0.5] * 3, [0.25] * 3).train()
    assert isinstance(model.roi_heads.box_roi_pool, SingleLevelRoIAlign)
    assert isinstance(build_detector(tower, cfg.model_copy(update={"fpn": True}), 3, [0.5] * 3,
                                     [0.25] * 3).roi_heads.box_roi_pool, MultiScaleRoIAlign)
    gen = torch.Generator().manual_seed(2)
    images = [torch.rand(3, 60, 80, generator=gen), torch.rand(3, 64, 70, generator=gen)]
    targets = [{"boxes": torch.tensor([[5.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[10.0, 2.0, 30.0, 20.0], [0.0, 30.0, 60.0, 64.0]]), "labels": torch.tensor([2, 3])}]
    head = list(model.roi_heads.box_head.parameters())

    def losses_and_grads():
        torch.manual_seed(3)  # the same RPN and box-head sampling
        losses = model(images, targets)
        return losses, torch.autograd.grad(sum(losses.values()), head)

    ours, g_ours = losses_and_grads()
    model.roi_heads.box_roi_pool = MultiScaleRoIAlign(["0"], cfg.roi_size, 2)
    ref, g_ref = losses_and_grads()
    for key in ref:
        torch.testing.assert_close(ours[key], ref[key], rtol=1e-5, atol=1e-6)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
