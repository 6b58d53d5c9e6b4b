"""The image store's layout: the one place that spells its file names.

``ctx ingest`` writes, every later stage reads::

    images/<image_id>.jpg   8-bit RGB JPEGs
    manifest.parquet        one row per image (``schemas.MANIFEST``): id, source, sha256, sizes, split
    annotations.parquet     one row per VOC object (``schemas.ANNOTATIONS``), boxes in stored pixels
    classes.txt             class names, one a line
    quarantine.json         every input not taken, with the reason

Readers that also take a VOC root or a plain image folder (pretraining,
detection) go through :func:`image_files` and ``labelled.read_detection_split``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from ctx_core.errors import UserError
from ctx_core.store.images import IMAGE_SUFFIXES
from ctx_core.store.schemas import ANNOTATIONS

IMAGES = "images"
MANIFEST = "manifest.parquet"
ANNOTATION_TABLE = "annotations.parquet"
CLASSES = "classes.txt"
QUARANTINE = "quarantine.json"


class StoreError(UserError):
    """A store that is missing or holds no image where one is asked for."""


def is_store(root: Path) -> bool:
    return (Path(root) / MANIFEST).is_file()


def image_path(root: Path, image_id: str) -> Path:
    """The stored JPEG of ``image_id``."""
    return Path(root) / IMAGES / f"{image_id}.jpg"


def read_manifest(root: Path, columns: Sequence[str] | None = None, setting: str = "the store") -> pd.DataFrame:
    """``manifest.parquet`` (only ``columns`` when given); ``setting`` names the params key in errors."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise StoreError(f"{setting} {root} is not an image store (no {MANIFEST}); run `ctx ingest` first")
    return pd.read_parquet(path, columns=list(columns) if columns else None)


def read_annotations(root: Path) -> pd.DataFrame:
    """``annotations.parquet``, or an empty table with its columns when the store has no boxes."""
    path = Path(root) / ANNOTATION_TABLE
    if path.is_file():
        return pd.read_parquet(path)
    return pd.DataFrame(columns=list(ANNOTATIONS.columns))


def read_store_classes(root: Path) -> list[str]:
    """``classes.txt``, or [] when absent."""
    path = Path(root) / CLASSES
    return [c.strip() for c in path.read_text().splitlines() if c.strip()] if path.is_file() else []


def split_image_ids(root: Path, splits: Sequence[str], setting: str) -> list[str]:
    """Sorted ids of the store's images in ``splits``; ``setting`` (e.g. ``features.splits``) names
    what to change when there is none."""
    manifest = read_manifest(root, ["image_id", "split"], setting)
    ids = sorted(manifest.loc[manifest["split"].isin(list(splits)), "image_id"])
    if not ids:
        raise StoreError(f"{Path(root) / MANIFEST} has no image in splits {list(splits)}; "
                         f"it has {sorted(manifest['split'].unique())} (set {setting})")
    return ids


def write_tables(folder: Path, manifest: pd.DataFrame, annotations: pd.DataFrame, classes: Sequence[str]) -> None:
    """Write the store's three tables into ``folder`` (validated by the caller)."""
    manifest.to_parquet(folder / MANIFEST, index=False)
    annotations.to_parquet(folder / ANNOTATION_TABLE, index=False)
    (folder / CLASSES).write_text("".join(f"{c}\n" for c in classes))


def image_files(root: Path, splits: Sequence[str], setting: str) -> list[Path]:
    """Image files of ``splits`` from a store, a VOC root (``ImageSets/Main/<split>.txt``),
    or every image below a plain folder (splits do not apply there)."""
    root = Path(root)
    if not root.exists():
        raise StoreError(f"{setting} {root} does not exist; run `ctx ingest` (or point it at a VOC root or image folder)")
    if is_store(root):
        return [image_path(root, i) for i in split_image_ids(root, splits, f"{setting.rsplit('.', 1)[0]}.splits")]
    if (root / "JPEGImages").is_dir():
        ids: list[str] = []
        for split in splits:
            listing = root / "ImageSets" / "Main" / f"{split}.txt"
            if listing.is_file():
                ids += listing.read_text().split()
        if not ids:
            raise StoreError(f"VOC root {root} lists no image in splits {list(splits)} (ImageSets/Main/<split>.txt)")
        return [root / "JPEGImages" / f"{i}.jpg" for i in sorted(set(ids))]
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def verify_store(root: Path) -> dict[str, int]:
    """Check a whole store: both tables against their schemas and each other, and one image
    file per manifest row. Returns ``{"images": n, "objects": m}``; raises a one-line UserError."""
    from ctx_core.store.schemas import validate_tables

    root = Path(root)
    try:
        manifest = read_manifest(root)
        annotations = read_annotations(root)
    except OSError as exc:
        raise StoreError(f"store {root} cannot be read ({exc})") from None
    validate_tables(manifest, annotations, read_store_classes(root))
    on_disk = {p.stem for p in (root / IMAGES).glob("*.jpg")}
    listed = set(manifest["image_id"])
    if on_disk != listed:
        raise StoreError(f"store {root}: {len(listed - on_disk)} manifest rows without an image file, "
                         f"{len(on_disk - listed)} image files without a row")
    return {"images": len(manifest), "objects": len(annotations)}
