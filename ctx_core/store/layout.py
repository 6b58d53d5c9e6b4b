"""The image store's layout: the one place that spells its file names.

``ctx ingest`` writes, every later stage reads::

    images/<image_id>.jpg   8-bit RGB JPEGs
    manifest.parquet        one row per image (``schemas.MANIFEST``): id, source, sha256, sizes, split
    annotations.parquet     one row per VOC object (``schemas.ANNOTATIONS``), boxes in stored pixels
    classes.txt             class names, one a line
    quarantine.json         every input not taken, with the reason

Readers that also take a VOC root or a plain image folder (pretraining,
detection) go through :func:`image_files` and ``labelled.read_detection_split``.

Splits ``train`` and ``val`` are derived from ``trainval`` when a store or VOC
root has no split of that name: ``val`` holds the trainval images whose content
hash falls in the first :data:`VAL_FRACTION` of the sha256 range
(:func:`in_val`), ``train`` the rest. The rule depends on the image's bytes
only, so a synthetic root (whose ``train.txt``/``val.txt`` ``ctx synth`` writes
by the same rule) and the store ingested from it agree image for image.
"""

from __future__ import annotations

import hashlib
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

TRAINVAL = "trainval"
# share of trainval carved out as the validation split: choices are made on it,
# the test split is scored once
VAL_FRACTION = 0.2
DERIVED_SPLITS = ("train", "val")


# what to do when a file of the store is damaged
STORE_REMEDY = "re-run `ctx ingest --force` to rebuild the store"


class StoreError(UserError):
    """A store that is missing, damaged, or holds no image where one is asked for."""


def is_store(root: Path) -> bool:
    return (Path(root) / MANIFEST).is_file()


def image_path(root: Path, image_id: str) -> Path:
    """The stored JPEG of ``image_id``."""
    return Path(root) / IMAGES / f"{image_id}.jpg"


def _read_table(path: Path, columns: Sequence[str] | None) -> pd.DataFrame:
    """A parquet table of the store (only ``columns`` when given); a truncated or corrupt
    file is a one-line :class:`StoreError` naming it and the remedy."""
    import pyarrow

    try:
        return pd.read_parquet(path, columns=list(columns) if columns else None)
    except (pyarrow.ArrowException, OSError, ValueError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StoreError(f"{path} is truncated or corrupt ({why}); {STORE_REMEDY}") from None


def read_manifest(root: Path, columns: Sequence[str] | None = None, setting: str = "the store") -> pd.DataFrame:
    """``manifest.parquet`` (only ``columns`` when given); ``setting`` names the params key in errors."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise StoreError(f"{setting} {root} is not an image store (no {MANIFEST}); run `ctx ingest` first")
    return _read_table(path, columns)


def read_annotations(root: Path) -> pd.DataFrame:
    """``annotations.parquet``, or an empty table with its columns when the store has no boxes."""
    path = Path(root) / ANNOTATION_TABLE
    if path.is_file():
        return _read_table(path, None)
    return pd.DataFrame(columns=list(ANNOTATIONS.columns))


def read_store_classes(root: Path) -> list[str]:
    """``classes.txt``, or [] when absent."""
    path = Path(root) / CLASSES
    try:
        return [c.strip() for c in path.read_text().splitlines() if c.strip()] if path.is_file() else []
    except UnicodeDecodeError:
        raise StoreError(f"{path} is corrupt (not UTF-8 text); {STORE_REMEDY}") from None


def in_val(sha256: str) -> bool:
    """Whether a trainval image whose content hash is ``sha256`` (hex) is in the derived ``val`` split."""
    return int(sha256[:8], 16) / 16**8 < VAL_FRACTION


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def split_mask(manifest: pd.DataFrame, splits: Sequence[str]) -> pd.Series:
    """Rows of ``manifest`` (columns ``split``, ``sha256``) in ``splits``; ``train``/``val``
    are derived from ``trainval`` (:func:`in_val`) when the manifest has no split of that name."""
    have = set(manifest["split"].unique())
    mask = manifest["split"].isin([s for s in splits if s in have])
    derived = [s for s in splits if s in DERIVED_SPLITS and s not in have]
    if derived and TRAINVAL in have:
        trainval = manifest["split"] == TRAINVAL
        val = manifest["sha256"].map(in_val).astype(bool)
        for split in derived:
            mask |= trainval & (val if split == "val" else ~val)
    return mask


def store_splits(manifest: pd.DataFrame) -> list[str]:
    """The split names a store answers to: its own, plus ``train``/``val`` when it has ``trainval``."""
    have = set(manifest["split"].unique())
    return sorted(have | (set(DERIVED_SPLITS) if TRAINVAL in have else set()))


def split_image_ids(root: Path, splits: Sequence[str], setting: str) -> list[str]:
    """Sorted ids of the store's images in ``splits`` (``train``/``val`` derived from ``trainval``
    when absent); ``setting`` (e.g. ``features.splits``) names what to change when there is none."""
    manifest = read_manifest(root, ["image_id", "split", "sha256"], setting)
    ids = sorted(manifest.loc[split_mask(manifest, splits), "image_id"])
    if not ids:
        raise StoreError(f"{Path(root) / MANIFEST} has no image in splits {list(splits)}; "
                         f"it has {store_splits(manifest)} (set {setting})")
    return ids


def voc_split_ids(root: Path, split: str) -> list[str] | None:
    """Image ids of ``ImageSets/Main/<split>.txt`` of a VOC root, in file order; ``train``/``val``
    derived from ``trainval.txt`` by the sha256 of ``JPEGImages/<id>.jpg`` when their list is
    absent; None when the root has no such split."""
    main = Path(root) / "ImageSets" / "Main"
    listing = main / f"{split}.txt"
    if not listing.is_file():
        if split not in DERIVED_SPLITS or not (main / f"{TRAINVAL}.txt").is_file():
            return None
        want_val = split == "val"
        return [i for i in voc_split_ids(root, TRAINVAL) or []
                if in_val(file_sha256(Path(root) / "JPEGImages" / f"{i}.jpg")) == want_val]
    return [line.split()[0] for line in listing.read_text(errors="replace").splitlines() if line.strip()]


def voc_splits(root: Path) -> list[str]:
    """The split names a VOC root answers to (list files without ``_``; ``train``/``val`` with ``trainval``)."""
    main = Path(root) / "ImageSets" / "Main"
    have = {p.stem for p in main.glob("*.txt") if "_" not in p.stem and p.stem != "classes"} if main.is_dir() else set()
    return sorted(have | (set(DERIVED_SPLITS) if TRAINVAL in have else set()))


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
            ids += voc_split_ids(root, split) or []
        if not ids:
            raise StoreError(f"VOC root {root} lists no image in splits {list(splits)} (ImageSets/Main/<split>.txt)")
        return [root / "JPEGImages" / f"{i}.jpg" for i in sorted(set(ids))]
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def images_in_split(root: Path, paths: Sequence[Path], split: str) -> list[str]:
    """Names (file stems) of ``paths``, images of ``root`` from :func:`image_files`, whose content
    (sha256) equals an image of ``root``'s split ``split``: the manifest's hashes for a store, the
    files' for a VOC root. [] when ``root`` has no such split (a plain folder has none)."""
    root = Path(root)
    if is_store(root):
        manifest = read_manifest(root, ["image_id", "split", "sha256"])
        held = set(manifest.loc[split_mask(manifest, [split]), "sha256"])
        sha_of = dict(zip(manifest["image_id"], manifest["sha256"]))
        return [Path(p).stem for p in paths if sha_of.get(Path(p).stem) in held]
    if (root / "JPEGImages").is_dir():
        ids = voc_split_ids(root, split)
        if not ids:
            return []
        held = {file_sha256(root / "JPEGImages" / f"{i}.jpg") for i in ids}
        return [Path(p).stem for p in paths if file_sha256(p) in held]
    return []


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
