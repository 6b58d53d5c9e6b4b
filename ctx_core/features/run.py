"""``run_extract``: features of patches for the pretrained encoder and the baselines.

Writes one feature set per embedder under ``features.out`` (``learned``,
``random_init``, ``raw_pixels``), each shards + ``index.parquet`` over the
same patches, plus a neighbours montage (learned next to random-init) and
``metrics.json`` under ``features.reports``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ctx_core.config import FeaturesConfig, Settings
from ctx_core.features.encoders import (
    Embedder,
    load_learned,
    pick_device,
    random_init_tower,
    raw_pixel_embedder,
    tower_embedder,
)
from ctx_core.features.extract import extract
from ctx_core.features.grid import dense_layout, random_layout
from ctx_core.knn import topk_correlation
from ctx_core.montage import Tile, patch_rows
from ctx_core.feature_store import BOX, LEARNED, FeatureSet, FeatureSetError, FeatureWriter
from ctx_core.distributed import bf16_autocast
from ctx_core.fsutil import atomic_output_dir, dvc_dir_hash
from ctx_core.store.layout import image_path, split_image_ids
from ctx_core.tracking import stage_run

@dataclass(frozen=True)
class ExtractResult:
    out: Path
    sets: dict[str, Path]
    images: int
    patches: int
    patches_per_second: dict[str, float]
    data_version: str
    reports: dict[str, Path]
    mlflow_run_id: str | None


def store_images(store: Path, splits: tuple[str, ...], max_images: int | None) -> list[tuple[str, Path]]:
    """(image_id, path) of the store's images in ``splits``, sorted by id, at most ``max_images``."""
    ids = split_image_ids(store, splits, "features.splits")
    return [(i, image_path(store, i)) for i in ids[:max_images]]


def _layout_fn(cfg: FeaturesConfig, patch: int):
    if cfg.sampling == "dense":
        return lambda number, w, h: dense_layout(w, h, patch, cfg.scales, cfg.stride_fraction)
    # one generator per image, so an image's patches do not depend on chunking
    return lambda number, w, h: random_layout(
        w, h, patch, cfg.scales, cfg.patches_per_image, np.random.default_rng([cfg.seed, number]))


def neighbours_montage(
    sets: dict[str, FeatureSet], store: Path, n_queries: int, k: int, seed: int, path: Path
) -> Path:
    """Random query patches and their top-``k`` patches from other images, one
    block of columns per feature set (in ``sets`` order)."""
    first = next(iter(sets.values()))
    index = first.index
    groups = torch.as_tensor(pd.factorize(index["image_id"])[0])
    k = min(k, int((groups != groups[0]).sum()))
    picks = np.random.default_rng(seed).choice(len(index), size=min(n_queries, len(index)), replace=False)
    found = {name: topk_correlation(fs.rows(picks), fs.chunks(), k, len(fs), groups[picks], groups)[1]
             for name, fs in sets.items()}

    def tile(row: int, caption: str = "", frame=None) -> Tile:
        r = index.iloc[row]
        return Tile(image_path(store, r["image_id"]), tuple(int(v) for v in r[BOX]), caption, frame)

    rows = []
    for q, row in enumerate(picks):
        tiles: list[Tile | None] = [tile(int(row), index.iloc[int(row)]["image_id"], (220, 30, 30))]
        for name in sets:
            tiles += [None] + [tile(int(m)) for m in found[name][q] if m >= 0]
        rows.append((f"query {q + 1}, then\nnearest by\n" + "\n".join(sets), tiles))
    return patch_rows(rows, path)


def run_extract(settings: Settings, extra_tags: dict[str, str] | None = None, progress: bool | None = None) -> ExtractResult:
    cfg = settings.params.features
    store = settings.path(cfg.input)
    images = store_images(store, cfg.splits, cfg.max_images)
    tower, contract, _ = load_learned(settings)
    patch = tower.patch_size
    device = pick_device(cfg.device)
    amp = bf16_autocast(cfg.amp, device)
    embedders: list[Embedder] = [tower_embedder(LEARNED, tower, cfg.layer, device, amp)]
    if "random_init" in cfg.baselines:
        embedders.append(tower_embedder("random_init", random_init_tower(tower.arch, patch, cfg.seed), cfg.layer, device, amp))
    if "raw_pixels" in cfg.baselines:
        embedders.append(raw_pixel_embedder(cfg.raw_pixels_side))

    out = settings.path(cfg.out)
    reports = settings.path(cfg.reports)
    data_version = dvc_dir_hash(store)
    set_meta = {"encoder": cfg.encoder, "arch": tower.arch, "patch_size": patch, "layer": cfg.layer, "chroma": contract.chroma,
                "patch_rms": contract.patch_rms, "task": contract.task, "sampling": cfg.sampling, "scales": list(cfg.scales),
                "stride_fraction": cfg.stride_fraction, "data_version": data_version, "store": str(store)}
    with stage_run(settings, "extract", {"data_version": data_version, **(extra_tags or {})}) as run:
        run.log_params({**cfg.model_dump(mode="json"), "arch": tower.arch, "patch_size": patch, "chroma": contract.chroma,
                        "patch_rms": contract.patch_rms, "task": contract.task,
                        "images": len(images), "device": str(device), "amp": amp})
        t0 = time.perf_counter()
        with atomic_output_dir(out, force=True) as tmp:
            writers = {e.name: FeatureWriter(tmp / e.name, e.dim, cfg.float16, cfg.shard_rows,
                                             {**set_meta, "features": e.name}) for e in embedders}
            stats = extract(images, _layout_fn(cfg, patch), patch, contract.preprocess,
                            embedders, writers, cfg.batch_size, cfg.images_per_chunk, progress)
            if stats.patches == 0:
                raise FeatureSetError(
                    f"empty feature set: none of the {len(images)} images holds a {patch}-px patch at "
                    f"features.scales {list(cfg.scales)}; use larger scales or larger images")
            for w in writers.values():
                w.close()
        wall = time.perf_counter() - t0
        sets = {e.name: out / e.name for e in embedders}
        rate = {name: stats.patches / max(s, 1e-9) for name, s in stats.seconds.items() if name != "decode"}
        metrics = {
            "images": stats.images, "images_without_patches": stats.images_without_patches, "patches": stats.patches,
            "patches_per_image": stats.patches / max(1, stats.images - stats.images_without_patches),
            "end_to_end_patches_per_second": stats.patches / wall,
            **{f"{name}_patches_per_second": r for name, r in rate.items()},
        }
        reports.mkdir(parents=True, exist_ok=True)
        (reports / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        montage_sets = {n: FeatureSet.open(p) for n, p in sets.items() if n in (LEARNED, "random_init")}
        montage = neighbours_montage(montage_sets, store, cfg.nn_queries, cfg.nn_k, cfg.seed, reports / "neighbours.png")
        files = {"metrics": reports / "metrics.json", "neighbours": montage}
        run.log_metrics(metrics)
        for p in files.values():
            run.log_artifact(p, "extract")
        run.log_artifact(out / LEARNED / "index.parquet", "extract")
    return ExtractResult(out, sets, stats.images, stats.patches, rate, data_version, files, run.run_id)
