import json

import numpy as np
import pandas as pd
import pytest
import torch

from ctx_core.errors import UserError
from ctx_core.features.encoders import Embedder, load_learned, random_init_tower
from ctx_core.features.extract import extract
from ctx_core.features.grid import dense_layout, random_layout
from ctx_core.encoder.preprocess import test_time as preprocess_test_time
from ctx_core.features.run import run_extract, store_images
from ctx_core.feature_store import FeatureSet, FeatureSetError, FeatureWriter
from ctx_core.encoder.artifact import EncoderContract, EncoderFileError, save_encoder
from ctx_core.models.towers import build_tower
from ctx_core.registry import RegistryError
from tests.features.conftest import feature_settings


def test_dense_layout_counts_and_boxes():
    lays = dense_layout(192, 144, 32, (1.0, 0.5), 0.5)
    assert [len(lay.corners) for lay in lays] == [11 * 8, 5 * 3]
    assert lays[0].boxes[-1].tolist() == [160, 112, 192, 144]
    half = lays[1].boxes  # 32-px patches at scale 0.5 cover 64 original px
    assert ((half[:, 2] - half[:, 0]) == 64).all() and half[:, 2].max() <= 192
    assert dense_layout(40, 40, 32, (0.5,), 0.5) == []  # too small at that scale


def test_random_layout_is_seeded_and_inside_the_image():
    a = random_layout(192, 144, 32, (1.0, 0.5), 50, np.random.default_rng(3))
    b = random_layout(192, 144, 32, (1.0, 0.5), 50, np.random.default_rng(3))
    assert sum(len(lay.boxes) for lay in a) == 50
    assert all(np.array_equal(x.boxes, y.boxes) for x, y in zip(a, b))
    assert all((lay.boxes[:, 2] <= 192).all() and (lay.boxes[:, 3] <= 144).all() for lay in a)


def test_test_time_preprocessing_keeps_colour_for_color_dropping():
    x = torch.rand(2, 3, 8, 8) * 255
    full = preprocess_test_time(x, "color_dropping", 50.0)
    assert torch.allclose(full, preprocess_test_time(x, "none", 50.0))
    assert torch.allclose(full.pow(2).mean(dim=(1, 2, 3)).sqrt(), torch.full((2,), 50.0), atol=1e-3)
    gray = preprocess_test_time(x, "grayscale", 50.0)
    assert torch.allclose(gray[:, 0], gray[:, 1])


def test_extraction_shapes_index_schema_and_float16(extracted):
    root = extracted.path(extracted.params.features.out)
    learned, pixels = FeatureSet.open(root / "learned"), FeatureSet.open(root / "raw_pixels")
    assert list(learned.index.columns) == ["image_id", "x0", "y0", "x1", "y1", "scale", "shard", "row"]
    assert learned.dim == 512 and pixels.dim == 3 * 8 * 8
    assert learned.meta["dtype"] == "float16" and learned.meta["chroma"] == "projection"
    shard = np.load(root / "learned" / "shard-00000.npy")
    assert shard.dtype == np.float16 and shard.shape[1] == 512
    assert learned.index["image_id"].nunique() == 40 and len(learned) == len(pixels)
    assert learned.index[["image_id", "x0", "y0"]].equals(pixels.index[["image_id", "x0", "y0"]])
    rows = np.array([5, 0, len(learned) - 1])
    assert learned.rows(rows).shape == (3, 512)
    metrics = json.loads((extracted.path(extracted.params.features.reports) / "metrics.json").read_text())
    assert metrics["patches"] == len(learned) and metrics["learned_patches_per_second"] > 0
    assert (extracted.path(extracted.params.features.reports) / "neighbours.png").stat().st_size > 1000


def test_extraction_is_chunked_and_sharded(tmp_path, store):
    images = store_images(store, ("unlabeled", "trainval", "test"), 10)
    seen: list[int] = []

    def embed(x: torch.Tensor) -> torch.Tensor:
        seen.append(len(x))
        return x.flatten(1)[:, :4]

    writer = FeatureWriter(tmp_path / "f", 4, float16=False, shard_rows=20, meta={})
    stats = extract(images, lambda n, w, h: dense_layout(w, h, 32, (0.5,), 0.5), 32, lambda x: x,
                    [Embedder("probe", 4, embed)], {"probe": writer}, batch_size=1000, images_per_chunk=3,
                    progress=False)
    index = writer.close()
    assert stats.images == 10 and stats.patches == len(index)
    # one embed call per chunk of 3 images, never more patches than those images hold
    assert len(seen) == 4 and max(seen) <= 3 * 25  # a 192x192 image holds 5x5 patches at scale 0.5
    sizes = [len(np.load(p)) for p in sorted((tmp_path / "f").glob("shard-*.npy"))]
    assert max(sizes) == 20 and sum(sizes) == len(index)
    assert index.groupby("shard")["row"].max().tolist()[:-1] == [19] * (len(sizes) - 1)


def test_random_init_tower_is_reproducible():
    a, b = random_init_tower("compact", 32, 5), random_init_tower("compact", 32, 5)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_missing_encoder_file_names_the_path(tmp_path, store):
    settings = feature_settings(tmp_path, store, tmp_path / "nope.pt")
    with pytest.raises(EncoderFileError, match="nope.pt does not exist"):
        run_extract(settings, progress=False)


def test_the_encoder_decides_the_architecture_not_pretrain_params(tmp_path, store):
    paper = build_tower("paper", 96)
    other = save_encoder(tmp_path / "paper.pt", paper, EncoderContract.of(paper, "grayscale", 30.0))
    settings = feature_settings(tmp_path, store, other)
    assert settings.params.pretrain.arch == "compact"
    tower, contract, _ = load_learned(settings)
    assert (tower.arch, tower.patch_size, contract.chroma, contract.patch_rms) == ("paper", 96, "grayscale", 30.0)


def test_encoder_missing_from_the_registry(tmp_path, store):
    settings = feature_settings(tmp_path, store, "models:/ctx-encoder@champion",
                                tracking={"uri": f"sqlite:///{tmp_path / 'mlruns.db'}"})
    with pytest.raises(RegistryError, match="'models:/ctx-encoder@champion' is not in the registry"):
        load_learned(settings)


def test_no_patch_fits_means_an_empty_feature_set_error(tmp_path, store, encoder_file):
    settings = feature_settings(tmp_path, store, encoder_file, {"scales": [0.1], "max_images": 2})
    with pytest.raises(FeatureSetError, match="empty feature set: none of the 2 images holds a 32-px patch"):
        run_extract(settings, progress=False)
    assert not settings.path(settings.params.features.out).exists()


def test_splits_without_images(tmp_path, store, encoder_file):
    with pytest.raises(UserError, match=r"no image in splits \['nope'\]"):
        store_images(store, ("nope",), None)


def test_empty_index_is_refused_on_read(tmp_path):
    FeatureWriter(tmp_path / "e", 4, True, 10, {}).close()
    with pytest.raises(FeatureSetError, match="is empty"):
        FeatureSet.open(tmp_path / "e")
    assert pd.read_parquet(tmp_path / "e" / "index.parquet").empty
