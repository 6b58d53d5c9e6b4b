"""Finding the images in a local folder: plain folders, VOC roots inside them, broken links.

Every file the user would recognise is named by a *source label*: the path as
configured (relative paths stay relative, so the store is the same in every
clone), ``archive!/member`` for archive members, or the ``s3://`` URI.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ctx_core.store import voc
from ctx_core.store.images import is_image_name
from ctx_core.ingest.quarantine import BROKEN_LINK, Rejected

@dataclass(frozen=True)
class Candidate:
    """One image file to ingest.

    ``voc_id`` is the VOC image id when the file is in a VOC root's
    ``JPEGImages/``; ``annotation`` its XML file, if any.
    """

    path: Path
    source: str
    split: str = "unlabeled"
    voc_id: str | None = None
    annotation: Path | None = None
    annotation_source: str | None = None


@dataclass
class Discovery:
    """What a source holds: images to try, inputs already refused, VOC classes, files skipped."""

    candidates: list[Candidate] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    ignored_files: int = 0

    def extend(self, other: "Discovery") -> None:
        self.candidates += other.candidates
        self.rejected += other.rejected
        self.classes += [c for c in other.classes if c not in self.classes]
        self.ignored_files += other.ignored_files


def label_for(prefix: str, rel: str) -> str:
    """``prefix`` joined with a path relative to it (``prefix`` may end in ``!`` for archives)."""
    if not rel or rel == ".":
        return prefix
    return f"{prefix.rstrip('/')}/{rel}" if prefix else rel


def _scan_voc(root: Path, top: Path, prefix: str) -> Discovery:
    found = Discovery()
    split_of = voc.read_splits(root)
    found.classes = voc.read_classes(root) or []
    for entry in sorted((root / "JPEGImages").iterdir()):
        rel = entry.relative_to(top).as_posix()
        if not is_image_name(entry.name) or entry.is_dir():
            found.ignored_files += 1
            continue
        if entry.is_symlink() and not entry.exists():
            found.rejected.append(Rejected(label_for(prefix, rel), BROKEN_LINK, "broken link (its target does not exist)"))
            continue
        image_id = os.path.splitext(entry.name)[0]
        xml = root / "Annotations" / f"{image_id}.xml"
        has_xml = xml.is_file()
        found.candidates.append(
            Candidate(
                path=entry,
                source=label_for(prefix, rel),
                split=split_of.get(image_id, "unlabeled"),
                voc_id=image_id,
                annotation=xml if has_xml else None,
                annotation_source=label_for(prefix, xml.relative_to(top).as_posix()) if has_xml else None,
            )
        )
    return found


def scan_folder(top: Path, prefix: str) -> Discovery:
    """Every image under ``top``, recursively, in sorted order.

    A VOC root met on the way (the folder itself or any sub-folder) is read as
    VOC: only ``JPEGImages/`` is taken (not the segmentation masks), with
    annotations and splits. Hidden folders (``.git``, ``.dvc``) are skipped and
    folder links are not followed (no cycles); file links are, and a link to
    nothing is reported. Files without an image suffix are counted as ignored.
    """
    found = Discovery()
    for folder, dirs, files in os.walk(top):
        here = Path(folder)
        if voc.is_voc_root(here):
            found.extend(_scan_voc(here, top, prefix))
            dirs[:] = []
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = here / name
            rel = path.relative_to(top).as_posix()
            if not is_image_name(name):
                found.ignored_files += 1
            elif path.is_symlink() and not path.exists():
                found.rejected.append(Rejected(label_for(prefix, rel), BROKEN_LINK, "broken link (its target does not exist)"))
            else:
                found.candidates.append(Candidate(path=path, source=label_for(prefix, rel)))
    return found
