"""``ctx nn``: the nearest patches of the feature set to a user's own patch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ctx_core.config import Settings
from ctx_core.distributed import bf16_autocast
from ctx_core.errors import UserError
from ctx_core.feature_store import BOX, LEARNED, FeatureSet
from ctx_core.features.encoders import load_learned, pick_device, tower_embedder
from ctx_core.features.preprocess import crop_box
from ctx_core.knn import topk_correlation
from ctx_core.montage import Tile, patch_rows
from ctx_core.store.images import read_image
from ctx_core.store.layout import image_path


class QueryError(UserError):
    """A query image or box that cannot be used."""


@dataclass(frozen=True)
class Match:
    image_id: str
    box: tuple[int, int, int, int]
    score: float

    def as_dict(self) -> dict:
        return {"image_id": self.image_id, "box": list(self.box), "score": round(self.score, 6)}


def parse_box(text: str) -> tuple[int, int, int, int]:
    """``'x0,y0,x1,y1'`` (0-based pixels, end exclusive) -> a tuple of ints."""
    parts = text.split(",")
    try:
        box = tuple(int(p) for p in parts)
    except ValueError:
        box = ()
    if len(box) != 4 or box[0] >= box[2] or box[1] >= box[3] or min(box) < 0:
        raise QueryError(f"--box {text!r}: expected x0,y0,x1,y1 with 0 <= x0 < x1 and 0 <= y0 < y1 (pixels)")
    return box  # type: ignore[return-value]


def _image(image: str, store: Path) -> tuple[torch.Tensor, str | None]:
    """The query image as uint8 (3, H, W) and its store id (None for an outside file)."""
    path = Path(image).expanduser()
    if path.is_file():
        return read_image(path), None
    in_store = image_path(store, image)
    if in_store.is_file():
        return read_image(in_store), image
    raise QueryError(f"--image {image!r} is neither an image file nor an image id of the store {store}")


def nearest_patches(settings: Settings, image: str, box: tuple[int, int, int, int], k: int) -> list[Match]:
    """Top-``k`` patches of the learned feature set by correlation with ``box`` of
    ``image`` (a file, or an image id of the store; its own image is excluded)."""
    fs = FeatureSet.open(settings.path(settings.params.features.out) / LEARNED)
    store = Path(fs.meta["store"])
    img, own_id = _image(image, store)
    height, width = img.shape[1:]
    if box[2] > width or box[3] > height:
        raise QueryError(f"--box {','.join(map(str, box))} lies outside the {width}x{height} image {image}")
    tower, contract, _ = load_learned(settings)
    used = (fs.meta["arch"], fs.meta["patch_size"], fs.meta["chroma"], fs.meta["patch_rms"])
    if (contract.arch, contract.patch_size, contract.chroma, contract.patch_rms) != used:
        raise QueryError(
            f"features.encoder is a {contract.arch!r} tower for {contract.patch_size}-px patches "
            f"(chroma {contract.chroma}, patch_rms {contract.patch_rms}) but the feature set {fs.folder} was extracted "
            f"with {used[0]!r} at {used[1]} px (chroma {used[2]}, patch_rms {used[3]}); run `ctx extract` again")
    embed = tower_embedder(LEARNED, tower, fs.meta["layer"], pick_device(settings.params.features.device),
                           bf16_autocast(settings.params.features.amp, pick_device(settings.params.features.device)))
    x = contract.preprocess(crop_box(img, box, tower.patch_size))
    ids = pd.factorize(fs.index["image_id"])
    groups = torch.as_tensor(ids[0])
    own = int(np.flatnonzero(ids[1] == own_id)[0]) if own_id in set(ids[1]) else -1
    candidates = int((groups != own).sum())
    scores, rows = topk_correlation(embed.embed(x), fs.chunks(), k, candidates, torch.tensor([own]), groups)
    out = []
    for s, r in zip(scores[0].tolist(), rows[0].tolist()):
        row = fs.index.iloc[r]
        out.append(Match(str(row["image_id"]), tuple(int(v) for v in row[BOX]), float(s)))
    return out


def matches_png(image: str, box: tuple[int, int, int, int], matches: list[Match], store: Path, path: Path) -> Path:
    """The query patch (red frame) and its matches in one row."""
    query_file = Path(image) if Path(image).is_file() else image_path(store, image)
    tiles = [Tile(query_file, box, "query", (220, 30, 30))]
    tiles += [Tile(image_path(store, m.image_id), m.box, f"{m.score:.3f}") for m in matches]
    return patch_rows([(f"{Path(image).name}\n{box}", tiles)], path)
