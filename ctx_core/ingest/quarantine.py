"""What ingestion could not use, and why: one entry per input not taken."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

# Categories of ``Rejected.kind``; the Dagster metadata and metrics count by them.
UNREADABLE = "unreadable"
TRUNCATED = "truncated"
NOT_AN_IMAGE = "not an image"
TOO_SMALL = "too small for the patch grid"
BOMB = "decompression bomb"
BROKEN_LINK = "broken link"
DUPLICATE = "duplicate"
MALFORMED_XML = "malformed XML"
BOX_OUTSIDE = "box outside the image"
ZERO_AREA_BOX = "zero-area box"
UNKNOWN_CLASS = "unknown class"
UNSAFE_MEMBER = "unsafe archive member"
TOO_LARGE = "file over the size limit"


@dataclass(frozen=True, order=True)
class Rejected:
    """One input not taken (or, for boxes, not taken as written).

    ``source``: the path as configured, ``archive!/member`` or an ``s3://`` URI;
    ``kind``: one of the categories above; ``reason``: one line for people.
    """

    source: str
    kind: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"source": self.source, "reason": self.reason, "kind": self.kind}


def count_by_kind(entries: Iterable[Rejected]) -> dict[str, int]:
    return dict(sorted(Counter(e.kind for e in entries).items()))


def write_quarantine(entries: Iterable[Rejected], path: Path) -> Path:
    """``quarantine.json``: a JSON list sorted by source, so reruns write identical bytes."""
    rows = [e.as_dict() for e in sorted(entries)]
    path.write_text(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
    return path
