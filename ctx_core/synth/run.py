"""``run_synth``: write the synthetic VOC benchmark and log it to MLflow."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ctx_core.config import ConfigError, Settings
from ctx_core.fsutil import atomic_output_dir, dvc_dir_hash
from ctx_core.plots import bar_chart, boxes_montage
from ctx_core.synth.scene import ObjectPalette, SceneObject, compose_scene
from ctx_core.synth.voc_writer import SPLITS, TRAINVAL_PARTS, annotation_xml, write_image_sets
from ctx_core.tracking import stage_run


@dataclass(frozen=True)
class SynthResult:
    out: Path
    data_version: str
    images: int
    objects: int
    split_sizes: dict[str, int]
    class_counts: dict[str, int]
    metrics: dict[str, float]
    montage: Path
    mlflow_run_id: str | None = None
    reports: dict[str, Path] = field(default_factory=dict)


def assign_splits(n: int, seed: int, fractions: dict[str, float]) -> tuple[list[str], list[int]]:
    """Split name and position within its split for each image index, from a seeded shuffle."""
    order = np.random.default_rng([seed, 0x5917]).permutation(n)
    n_train = round(fractions["trainval"] * n)
    n_test = round(fractions["test"] * n)
    n_unl = n - n_train - n_test
    split = [""] * n
    position = [0] * n
    bounds = {"unlabeled": (0, n_unl), "trainval": (n_unl, n_unl + n_train), "test": (n_unl + n_train, n)}
    for name, (lo, hi) in bounds.items():
        for pos, idx in enumerate(sorted(order[lo:hi])):
            split[idx], position[idx] = name, pos
    return split, position


_PALETTES: dict[str | None, ObjectPalette] = {}


def _render_one(job: tuple[int, int, int, int, int, int, str | None, str]) -> tuple[str, int, int, list[SceneObject]]:
    """Render and write image ``index``; runs in a worker process."""
    index, anchor, seed, size, max_objects, quality, sprites, out = job
    palette = _PALETTES.get(sprites)
    if palette is None:
        palette = _PALETTES[sprites] = ObjectPalette(Path(sprites) if sprites else None)
    rng = np.random.default_rng([seed, index])
    n_objects = int(rng.integers(1, max_objects + 1))
    img, objects = compose_scene(rng, size, palette, n_objects, anchor)
    image_id = f"{index + 1:06d}"
    root = Path(out)
    img.save(root / "JPEGImages" / f"{image_id}.jpg", quality=quality)
    (root / "Annotations" / f"{image_id}.xml").write_text(annotation_xml(image_id, img.width, img.height, objects))
    return image_id, img.width, img.height, objects


def _validate(settings: Settings) -> None:
    synth, pre = settings.params.data.synth, settings.params.pretrain
    short = round(0.75 * synth.size)
    if short < pre.grid_extent:
        need = -(-pre.grid_extent * 4 // 3)
        raise ConfigError(
            f"data.synth.size = {synth.size} gives images whose shorter side ({short} px) cannot hold "
            f"the patch grid ({pre.grid_extent} px = 3 x pretrain.patch_size {pre.patch_size} + "
            f"2 x gap {pre.gap} + 2 x jitter {pre.jitter}); use a size of at least {need}"
        )


def run_synth(
    settings: Settings,
    force: bool = False,
    extra_tags: dict[str, str] | None = None,
    progress: bool | None = None,
) -> SynthResult:
    """Write ``data.synth.images`` scenes in the VOC layout to ``data.synth.out``.

    The dataset appears under ``out`` only when complete (written to a
    temporary folder, then moved). The same settings give byte-identical files.
    """
    cfg = settings.params.data.synth
    _validate(settings)
    out = settings.path(cfg.out)
    sprites = str(settings.path(cfg.sprites).resolve()) if cfg.sprites else None
    try:
        palette = ObjectPalette(Path(sprites) if sprites else None)
    except ValueError as exc:
        raise ConfigError(f"data.synth.sprites: {exc}") from None
    names = palette.names
    split, position = assign_splits(cfg.images, cfg.seed, cfg.splits.model_dump())
    workers = cfg.workers or os.cpu_count() or 1

    t0 = time.perf_counter()
    with atomic_output_dir(out, force) as tmp:
        (tmp / "JPEGImages").mkdir()
        (tmp / "Annotations").mkdir()
        jobs = [
            (i, position[i] % len(names), cfg.seed, cfg.size, cfg.max_objects, cfg.jpeg_quality, sprites, str(tmp))
            for i in range(cfg.images)
        ]
        bar = dict(total=len(jobs), desc="synth", unit="img", disable=True if progress is False else None)
        if workers == 1:
            rendered = [_render_one(j) for j in tqdm(jobs, **bar)]
        else:
            with ProcessPoolExecutor(workers) as pool:
                rendered = list(tqdm(pool.map(_render_one, jobs, chunksize=16), **bar))
        seconds = time.perf_counter() - t0
        split_of = {image_id: split[i] for i, (image_id, *_rest) in enumerate(rendered)}
        objects_of = {image_id: objs for image_id, _w, _h, objs in rendered}
        write_image_sets(tmp, names, split_of, objects_of)

    data_version = dvc_dir_hash(out)
    all_objects = [o for _id, _w, _h, objs in rendered for o in objs]
    class_counts = {c: 0 for c in names}
    class_counts.update(Counter(o.name for o in all_objects))
    per_split = {
        s: Counter(o.name for image_id, _w, _h, objs in rendered if split_of[image_id] == s for o in objs)
        for s in SPLITS
    }
    split_sizes = {s: sum(1 for v in split_of.values() if v == s) for s in SPLITS}
    # train/val carved from trainval by the writer; written lists, counted once
    part_sizes = {s: len((out / "ImageSets" / "Main" / f"{s}.txt").read_text().split()) for s in TRAINVAL_PARTS}
    n_obj = max(1, len(all_objects))
    metrics = {
        "images": float(cfg.images),
        "objects": float(len(all_objects)),
        "objects_per_image": len(all_objects) / cfg.images,
        "difficult_share": sum(o.difficult for o in all_objects) / n_obj,
        "truncated_share": sum(o.truncated for o in all_objects) / n_obj,
        "classes": float(len(names)),
        **{f"images_{s}": float(n) for s, n in {**split_sizes, **part_sizes}.items()},
    }

    reports = settings.path(cfg.reports)
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    rows = ["class,split,count"] + [f"{c},{s},{per_split[s].get(c, 0)}" for s in SPLITS for c in names]
    (reports / "class_counts.csv").write_text("\n".join(rows) + "\n")
    sample = [r for r in rendered if split_of[r[0]] == "trainval"][:12] or rendered[:12]
    items = []
    for image_id, _w, _h, objs in sample:
        with Image.open(out / "JPEGImages" / f"{image_id}.jpg") as im:
            items.append((im.convert("RGB"), [(o.name, o.box, o.difficult) for o in objs]))
    montage = reports / "montage.png"
    boxes_montage(items, names).save(montage)
    histogram = bar_chart(class_counts, "objects per class (all splits)", "objects", reports / "class_histogram.png")

    tags = {"data_version": data_version, **(extra_tags or {})}
    with stage_run(settings, "synth", tags) as run:
        run.log_params(
            {"images": cfg.images, "seed": cfg.seed, "size": cfg.size, "sprites": cfg.sprites,
             "max_objects": cfg.max_objects, "jpeg_quality": cfg.jpeg_quality,
             **{f"split_{k}": v for k, v in cfg.splits.model_dump().items()}}
        )
        run.log_metrics({**metrics, "images_per_second": cfg.images / seconds})
        for path in (montage, histogram, reports / "class_counts.csv", reports / "metrics.json"):
            run.log_artifact(path, "synth")
        run_id = run.run_id

    return SynthResult(
        out=out,
        data_version=data_version,
        images=cfg.images,
        objects=len(all_objects),
        split_sizes=split_sizes,
        class_counts=class_counts,
        metrics=metrics,
        montage=montage,
        mlflow_run_id=run_id,
        reports={"metrics": reports / "metrics.json", "class_counts": reports / "class_counts.csv",
                 "histogram": histogram},
    )
