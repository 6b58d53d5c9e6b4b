"""``run_ingest``: any image source into one normalised, versioned store.

Store layout (``data.ingest.out``)::

    images/<image_id>.jpg   8-bit RGB JPEGs
    manifest.parquet        one row per image (see ``schemas.MANIFEST``)
    annotations.parquet     one row per VOC object, boxes in stored pixels
    classes.txt             class names, one a line
    quarantine.json         every input not taken, with its reason

The DVC directory hash of the store is the data version; the MLflow run and
the Dagster materialisation carry it.
"""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image
from tqdm import tqdm

from ctx_core.config import Settings
from ctx_core.errors import UserError
from ctx_core.fsutil import atomic_output_dir, dvc_dir_hash
from ctx_core.ingest import quarantine as q
from ctx_core.ingest.annotate import boxes_for_image
from ctx_core.ingest.normalise import Normalised, NormaliseJob, file_sha256, normalise_image
from ctx_core.ingest.quarantine import Rejected, count_by_kind, write_quarantine
from ctx_core.ingest.resolve import SourceError, local_source, open_source
from ctx_core.store.schemas import IMAGE_ID, SPLITS, validate_tables
from ctx_core.ingest.sources import Candidate
from ctx_core.store.images import IMAGE_SUFFIXES
from ctx_core.store.layout import IMAGES, image_path, write_tables
from ctx_core.store.voc import AnnotationError, parse_annotation
from ctx_core.plots import boxes_montage
from ctx_core.tracking import stage_run

MANIFEST_COLUMNS = {
    "image_id": "str", "source": "str", "sha256": "str", "orig_width": "int64", "orig_height": "int64",
    "width": "int64", "height": "int64", "split": "str",
}
ANNOTATION_COLUMNS = {
    "image_id": "str", "class": "str", "xmin": "int64", "ymin": "int64", "xmax": "int64", "ymax": "int64",
    "difficult": "bool", "truncated": "bool",
}


class NothingIngestedError(UserError):
    """No image of the source could be used; the message is one line."""


@dataclass(frozen=True)
class IngestResult:
    store: Path
    data_version: str
    ingested: list[str]
    quarantined: list[Rejected]
    split_sizes: dict[str, int]
    objects: int
    classes: list[str]
    ignored_files: int
    metrics: dict[str, float]
    montage: Path
    mlflow_run_id: str | None = None
    reports: dict[str, Path] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """What ``ctx ingest --json`` prints."""
        return {
            "store": str(self.store),
            "data_version": self.data_version,
            "counts": {
                "ingested": len(self.ingested),
                "quarantined": len(self.quarantined),
                "objects": self.objects,
                "ignored_files": self.ignored_files,
                "splits": self.split_sizes,
                "quarantined_by_reason": count_by_kind(self.quarantined),
            },
            "ingested": self.ingested,
            "quarantined": [{"source": r.source, "reason": r.reason} for r in self.quarantined],
            "classes": self.classes,
            "mlflow_run_id": self.mlflow_run_id,
        }


@dataclass
class _Kept:
    candidate: Candidate
    image_id: str
    sha256: str


def _hash_or_reject(job: tuple[Candidate, int]) -> str | Rejected:
    c, max_bytes = job
    try:
        size = c.path.stat().st_size
        if size == 0:
            return Rejected(c.source, q.NOT_AN_IMAGE, "not an image (empty file)")
        if size > max_bytes:
            return Rejected(c.source, q.TOO_LARGE, f"file over the size limit ({size} > {max_bytes} bytes)")
        return file_sha256(c.path)
    except OSError as exc:
        return Rejected(c.source, q.UNREADABLE, f"cannot read ({exc.strerror or exc})")


def _deduplicate(candidates: list[Candidate], workers: int, max_bytes: int) -> tuple[list[_Kept], list[Rejected]]:
    """Hash every file; keep the first of each content (sorted by source) under a unique image id."""
    ordered = sorted(candidates, key=lambda c: c.source)
    with ThreadPoolExecutor(workers) as pool:  # hashlib releases the GIL: threads suffice
        hashes = list(pool.map(_hash_or_reject, [(c, max_bytes) for c in ordered]))
    kept: list[_Kept] = []
    rejected: list[Rejected] = []
    first_of: dict[str, str] = {}
    owner_of: dict[str, str] = {}
    for c, h in zip(ordered, hashes):
        if isinstance(h, Rejected):
            rejected.append(h)
            continue
        if h in first_of:
            rejected.append(Rejected(c.source, q.DUPLICATE, f"duplicate of {first_of[h]}"))
            continue
        image_id = c.voc_id if c.voc_id and re.fullmatch(IMAGE_ID, c.voc_id) else h[:16]
        if image_id in owner_of:
            rejected.append(Rejected(c.source, q.DUPLICATE, f"image id {image_id} already taken by {owner_of[image_id]}"))
            continue
        first_of[h] = owner_of[image_id] = c.source
        kept.append(_Kept(c, image_id, h))
    return kept, rejected


def _normalise_all(jobs: list[NormaliseJob], workers: int, progress: bool | None) -> list[Normalised | Rejected]:
    bar = dict(total=len(jobs), desc="ingest", unit="img", disable=True if progress is False else None)
    if workers == 1 or len(jobs) < 2:
        return [normalise_image(j) for j in tqdm(jobs, **bar)]
    chunk = max(1, min(16, len(jobs) // (4 * workers)))
    with ProcessPoolExecutor(min(workers, len(jobs))) as pool:
        return list(tqdm(pool.map(normalise_image, jobs, chunksize=chunk), **bar))


def _check_paths(settings: Settings, out: Path) -> None:
    """The store may not live inside a local source, nor the source inside the store:
    replacing the store must never touch a source file, and a rerun must not ingest its own output."""
    src = local_source(settings)
    if src is None:
        return
    a, b = src.resolve(), out.resolve()
    if b == a or b.is_relative_to(a) or a.is_relative_to(b):
        raise SourceError(
            f"data.ingest.out = {settings.params.data.ingest.out!r} overlaps the source "
            f"{settings.params.data.ingest.source!r}; choose a store folder outside it"
        )


def _frame(rows: list[dict[str, Any]], columns: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([r[c] for r in rows], dtype=t) for c, t in columns.items()})


def _montage(store: Path, manifest: pd.DataFrame, annotations: pd.DataFrame, classes: list[str], path: Path) -> Path:
    """Up to 12 stored images, annotated ones first, with their boxes."""
    annotated = set(annotations["image_id"])
    ids = sorted(manifest["image_id"], key=lambda i: (i not in annotated, i))[:12]
    items = []
    for image_id in ids:
        objs = annotations[annotations["image_id"] == image_id]
        boxes = [(r["class"], (r.xmin - 1, r.ymin - 1, r.xmax, r.ymax), bool(r.difficult)) for _, r in objs.iterrows()]
        with Image.open(image_path(store, image_id)) as im:
            items.append((im.convert("RGB"), boxes))
    boxes_montage(items, classes).save(path)
    return path


def run_ingest(
    settings: Settings,
    force: bool = False,
    extra_tags: dict[str, str] | None = None,
    progress: bool | None = None,
) -> IngestResult:
    """Ingest ``data.ingest.source`` into the store at ``data.ingest.out``.

    The store appears only when complete (written beside it, then moved).
    Sources are only read. Raises :class:`NothingIngestedError` when no image
    could be used (the store is then left as it was; the reasons are in
    ``<reports>/quarantine.json``).
    """
    cfg = settings.params.data.ingest
    out = settings.path(cfg.out)
    reports = settings.path(cfg.reports)
    _check_paths(settings, out)
    workers = cfg.workers or os.cpu_count() or 1
    t0 = time.perf_counter()
    with open_source(settings) as found:
        if not found.candidates and not found.rejected:
            kinds = ", ".join(sorted(IMAGE_SUFFIXES))
            raise NothingIngestedError(
                f"no image found in data.ingest.source = {cfg.source!r} (searched recursively for {kinds}, any case)"
            )
        with atomic_output_dir(out, force) as tmp:
            (tmp / IMAGES).mkdir()
            kept, rejected = _deduplicate(found.candidates, workers, cfg.max_file_bytes)
            rejected += found.rejected
            jobs = [
                NormaliseJob(
                    path=str(k.candidate.path), source=k.candidate.source, sha256=k.sha256,
                    dest=str(image_path(tmp, k.image_id)), min_pixels=cfg.min_pixels,
                    max_pixels=cfg.max_pixels, max_decode_pixels=cfg.max_decode_pixels,
                    min_side=settings.params.pretrain.grid_extent, alpha=cfg.alpha, jpeg_quality=cfg.jpeg_quality,
                )
                for k in kept
            ]
            results = _normalise_all(jobs, workers, progress)
            seconds = time.perf_counter() - t0

            rows, boxes = [], []
            given_classes = list(found.classes)
            for k, res in zip(kept, results):
                if isinstance(res, Rejected):
                    rejected.append(res)
                    continue
                split = k.candidate.split
                if k.candidate.annotation is not None:
                    try:
                        objects = parse_annotation(k.candidate.annotation)
                    except AnnotationError as exc:
                        rejected.append(Rejected(k.candidate.annotation_source, q.MALFORMED_XML,
                                                 f"malformed XML: {exc}; its image is kept as unlabeled"))
                        objects, split = [], "unlabeled"
                    taken, refused = boxes_for_image(objects, res, given_classes, k.candidate.annotation_source)
                    boxes += [{"image_id": k.image_id, **b} for b in taken]
                    rejected += refused
                rows.append({"image_id": k.image_id, "source": res.source, "sha256": res.sha256,
                             "orig_width": res.orig_width, "orig_height": res.orig_height,
                             "width": res.width, "height": res.height, "split": split})
            reports.mkdir(parents=True, exist_ok=True)
            write_quarantine(rejected, reports / "quarantine.json")
            if not rows:
                counts = ", ".join(f"{n} {kind}" for kind, n in count_by_kind(rejected).items())
                raise NothingIngestedError(
                    f"no image ingested from {cfg.source}: {len(rejected)} inputs quarantined ({counts}); "
                    f"reasons in {reports / 'quarantine.json'}"
                )
            classes = given_classes or sorted({b["class"] for b in boxes})
            manifest = _frame(sorted(rows, key=lambda r: r["image_id"]), MANIFEST_COLUMNS)
            annotations = _frame(boxes, ANNOTATION_COLUMNS)
            validate_tables(manifest, annotations, classes)
            write_tables(tmp, manifest, annotations, classes)
            write_quarantine(rejected, tmp / "quarantine.json")

    data_version = dvc_dir_hash(out)
    split_sizes = {s: int((manifest["split"] == s).sum()) for s in SPLITS}
    by_kind = count_by_kind(rejected)
    metrics = {
        "images": float(len(manifest)),
        "objects": float(len(annotations)),
        "quarantined": float(len(rejected)),
        "ignored_files": float(found.ignored_files),
        "resized": float((manifest["width"] != manifest["orig_width"]).sum()),
        **{f"images_{s}": float(n) for s, n in split_sizes.items()},
        **{f"quarantined_{k.replace(' ', '_').replace('-', '_')}": float(n) for k, n in by_kind.items()},
    }
    (reports / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    montage = _montage(out, manifest, annotations, classes, reports / "montage.png")

    with stage_run(settings, "ingest", {"data_version": data_version, **(extra_tags or {})}) as run:
        run.log_params(cfg.model_dump())
        run.log_metrics({**metrics, "images_per_second": len(manifest) / max(seconds, 1e-9)})
        for path in (montage, reports / "metrics.json", out / "quarantine.json"):
            run.log_artifact(path, "ingest")
        if run.run is not None:
            import mlflow

            with warnings.catch_warnings():
                # MLflow registers its local source under two schemes and warns that a
                # file URI is ambiguous, and hints about integer columns in model
                # signatures; neither applies to a dataset record
                warnings.simplefilter("ignore", UserWarning)
                dataset = mlflow.data.from_pandas(
                    manifest, source=out.resolve().as_uri(), name="raw_images", digest=data_version.removesuffix(".dir")
                )
                mlflow.log_input(dataset, context="ingest")
        run_id = run.run_id

    return IngestResult(
        store=out,
        data_version=data_version,
        ingested=manifest["source"].tolist(),
        quarantined=sorted(rejected),
        split_sizes=split_sizes,
        objects=len(annotations),
        classes=classes,
        ignored_files=found.ignored_files,
        metrics=metrics,
        montage=montage,
        mlflow_run_id=run_id,
        reports={"metrics": reports / "metrics.json", "quarantine": out / "quarantine.json", "montage": montage},
    )
