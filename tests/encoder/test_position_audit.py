"""The absolute-position audit: features that encode where a patch sits are caught,
features that do not are not."""
import numpy as np
import pytest
import torch
from PIL import Image

from ctx_core.encoder.artifact import EncoderContract
from ctx_core.encoder.embed import Embedder
from ctx_core.encoder.position_audit import audit_position, sample_patches

CONTRACT = EncoderContract("compact", 16, "none", 50.0, {"fc6": 8, "pool5": 8}, "context", "test", "")


@pytest.fixture(scope="module")
def stripe_images(tmp_path_factory):
    """Stripes whose period shrinks left to right and top to bottom: a patch's texture gives its position."""
    folder = tmp_path_factory.mktemp("stripes")
    rng = np.random.default_rng(0)
    paths = []
    h = w = 96
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    for k in range(24):
        phase = rng.uniform(0, 2 * np.pi, 2)
        fx = 0.1 + 0.9 * x / w
        fy = 0.1 + 0.9 * y / h
        img = 128 + 60 * np.sin(fx * x + phase[0]) + 60 * np.sin(fy * y + phase[1]) + rng.normal(0, 3, (h, w))
        rgb = np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
        path = folder / f"{k:03d}.png"
        Image.fromarray(rgb).save(path)
        paths.append(path)
    return paths


def spectrum() -> Embedder:
    def embed(x: torch.Tensor) -> torch.Tensor:
        g = x[:, 0]
        return torch.cat([torch.fft.rfft(g, dim=2).abs().mean(dim=1), torch.fft.rfft(g, dim=1).abs().mean(dim=2)], dim=1)

    return Embedder("spectrum", 18, embed)


def noise(seed: int) -> Embedder:
    gen = torch.Generator().manual_seed(seed)
    return Embedder("noise", 16, lambda x: torch.randn(len(x), 16, generator=gen))


def test_sample_patches_positions_are_normalised_centres(stripe_images):
    pixels, centres, owner = sample_patches(stripe_images[:3], 16, 5, seed=1)
    assert pixels.shape == (15, 3, 16, 16)
    assert centres.min() >= 8 / 96 and centres.max() <= 1 - 8 / 96
    assert list(np.bincount(owner)) == [5, 5, 5]


def test_position_carrying_features_are_flagged(stripe_images):
    result = audit_position({"learned": spectrum(), "random_init": noise(0)}, CONTRACT, stripe_images,
                            patches_per_image=24, seed=0, resamples=200)
    learned, rand = result.ratios["learned"].mean, result.ratios["random_init"].mean
    assert learned < 0.6, learned
    assert rand > 0.9, rand
    assert result.shortcut
    warning = result.warning()
    assert f"{learned:.2f}" in warning and f"{rand:.2f}" in warning
    assert result.images_scored == 12 and result.images_fit == 12
    assert result.metrics()["position_shortcut"] == 1.0


def test_position_free_features_are_not_flagged(stripe_images):
    result = audit_position({"learned": noise(1), "random_init": noise(2)}, CONTRACT, stripe_images,
                            patches_per_image=16, seed=0, resamples=200)
    assert not result.shortcut and result.warning() is None
    assert result.ratios["learned"].low < 1.05 < result.ratios["learned"].high + 0.2
