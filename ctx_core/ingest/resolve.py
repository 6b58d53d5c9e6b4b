"""Turning ``data.ingest.source`` into local files: a folder as is, an archive
extracted into a temporary folder, an S3 prefix downloaded into one."""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ctx_core.config import Settings
from ctx_core.errors import UserError
from ctx_core.ingest.archive import ARCHIVE_SUFFIXES, extract_archive, is_archive
from ctx_core.ingest.s3 import download_prefix
from ctx_core.ingest.sources import Discovery, scan_folder
from ctx_core.store.images import IMAGE_SUFFIXES, is_image_name


class SourceError(UserError):
    """A source that does not exist or is of no accepted kind; the message is one line."""


ACCEPTED = "a folder, a VOC root, a " + "/".join(ARCHIVE_SUFFIXES) + " archive or s3://bucket/prefix"


def local_source(settings: Settings) -> Path | None:
    """The source as a local path, or None for S3."""
    src = settings.params.data.ingest.source
    return None if src.startswith("s3://") else settings.path(src)


def _voc_or_image(key: str) -> bool:
    # VOC roots need their XML and ImageSets lists as well as the images
    return is_image_name(key) or key.lower().endswith((".xml", ".txt"))


@contextmanager
def open_source(settings: Settings) -> Iterator[Discovery]:
    """Yield what the configured source holds; temporary copies live until the block ends.

    Labels: the source string as configured, joined with each file's relative
    path (``archive!/member`` inside archives, full ``s3://`` URIs for S3).
    """
    cfg = settings.params.data.ingest
    label = cfg.source.rstrip("/") or cfg.source
    if cfg.source.startswith("s3://"):
        with tempfile.TemporaryDirectory(prefix="ctx-ingest-s3-") as tmp:
            rejected, ignored = download_prefix(
                cfg.source, Path(tmp), _voc_or_image,
                endpoint_url=settings.params.storage.s3_endpoint_url, max_attempts=cfg.s3_max_attempts,
                threads=cfg.download_threads, max_bytes=cfg.max_file_bytes, timeout_s=cfg.s3_timeout_s,
            )
            found = scan_folder(Path(tmp), label)
            found.rejected += rejected
            found.ignored_files += ignored
            yield found
        return
    path = local_source(settings)
    if path.is_dir():
        yield scan_folder(path, label)
    elif is_archive(path):
        with tempfile.TemporaryDirectory(prefix="ctx-ingest-archive-") as tmp:
            rejected = extract_archive(path, Path(tmp), label, cfg.max_file_bytes, cfg.max_archive_bytes)
            found = scan_folder(Path(tmp), f"{label}!")
            found.rejected += rejected
            yield found
    elif path.exists():
        kinds = ", ".join(sorted(IMAGE_SUFFIXES))
        raise SourceError(
            f"data.ingest.source = {cfg.source!r} is a file but not an archive; expected {ACCEPTED} "
            f"(images inside: {kinds})"
        )
    else:
        raise SourceError(f"data.ingest.source = {cfg.source!r}: {path} does not exist; expected {ACCEPTED}")
