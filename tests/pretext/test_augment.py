"""Chromatic-aberration handling, pixelation and normalisation against NumPy."""

import numpy as np
import pytest
import torch

from ctx_core.encoder.preprocess import grayscale, normalise, project_colour, projection_matrix
from ctx_core.pretext.augment import augment_patches, drop_colour, pixelate


def numpy_projection() -> np.ndarray:
    a = np.array([[-1.0, 2.0, -1.0]])
    return np.eye(3) - a.T @ a / (a @ a.T)


def test_projection_matrix_and_pixels_match_numpy():
    B = numpy_projection()
    assert np.allclose(projection_matrix().numpy(), B, atol=1e-7)
    # B is the orthogonal projector removing the green-magenta axis
    assert np.allclose(B @ B, B) and np.allclose(B @ np.array([-1, 2, -1]), 0)
    assert np.allclose(B @ np.ones(3), np.ones(3))
    x = np.random.default_rng(0).random((4, 3, 5, 6)) * 255
    want = np.einsum("dc,nchw->ndhw", B, x)
    got = project_colour(torch.tensor(x, dtype=torch.float64)).numpy()
    assert np.allclose(got, want)


def test_colour_dropping_keeps_one_channel_and_adds_small_noise():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(200, 3, 8, 8, dtype=torch.float64) * 200 + 20
    out = drop_colour(x, gen).numpy()
    xs = x.numpy()
    kept_counts = np.zeros(3)
    for n in range(len(xs)):
        same = [np.array_equal(out[n, c], xs[n, c]) for c in range(3)]
        assert sum(same) == 1
        k = same.index(True)
        kept_counts[k] += 1
        std_kept = xs[n, k].std(ddof=1)
        for c in range(3):
            if c != k:
                assert abs(out[n, c].mean()) < 0.05 * std_kept
                assert 0.3 * 0.01 * std_kept < out[n, c].std() < 3 * 0.01 * std_kept
    assert (kept_counts > 40).all()  # the kept channel is random


def test_grayscale_matches_numpy_luma():
    x = torch.rand(3, 3, 4, 4, dtype=torch.float64)
    y = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    out = grayscale(x)
    for c in range(3):
        assert torch.allclose(out[:, c], y)


def test_normalise_zero_mean_per_channel_and_target_rms():
    x = torch.rand(10, 3, 16, 16, dtype=torch.float64) * 255
    out = normalise(x, 50.0).numpy()
    xs = x.numpy()
    centred = xs - xs.mean(axis=(2, 3), keepdims=True)
    want = centred * 50.0 / np.sqrt((centred ** 2).mean(axis=(1, 2, 3), keepdims=True))
    assert np.allclose(out, want)


def test_pixelation_probability_and_block_structure():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(400, 3, 32, 32)
    out = pixelate(x, gen, prob=0.33, min_side=4, max_side=8)
    changed = (out != x).flatten(1).any(1).float().mean().item()
    assert 0.25 < changed < 0.41
    assert torch.equal(pixelate(x, gen, prob=0.0, min_side=4, max_side=8), x)
    # a pixelated patch has far less high-frequency energy than the original
    idx = (out != x).flatten(1).any(1)
    hf = lambda t: (t[..., 1:] - t[..., :-1]).abs().mean().item()
    assert hf(out[idx]) < 0.5 * hf(x[idx])


@pytest.mark.parametrize("chroma", ["projection", "color_dropping", "grayscale", "none"])
def test_augment_is_deterministic_given_the_generator(chroma):
    patches = torch.randint(0, 256, (16, 3, 12, 12), dtype=torch.uint8)
    run = lambda: augment_patches(patches, torch.Generator().manual_seed(5), chroma, 0.5, 3, 11, 50.0)
    a, b = run(), run()
    assert a.dtype == torch.float32 and torch.equal(a, b)
    rms = a.pow(2).mean(dim=(1, 2, 3)).sqrt()
    assert torch.allclose(rms, torch.full_like(rms, 50.0), rtol=1e-3)


def test_pixelation_equals_area_down_then_bilinear_up():
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(64, 3, 32, 32, dtype=torch.float64)
    out = pixelate(x, torch.Generator().manual_seed(3), prob=1.0, min_side=4, max_side=31)
    torch.rand(64, generator=gen)
    sides = torch.randint(4, 32, (64,), generator=gen).clamp_max(31)
    for k in range(64):
        s = int(sides[k])
        small = torch.nn.functional.adaptive_avg_pool2d(x[k : k + 1], s)
        want = torch.nn.functional.interpolate(small, size=(32, 32), mode="bilinear", align_corners=False)
        assert torch.allclose(out[k : k + 1], want, atol=1e-9)
