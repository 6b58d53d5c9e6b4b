"""A cheap fingerprint of what ``data.ingest.source`` holds, without reading images.

Folders: every file's relative path, size and modification time; an archive:
its size and modification time; S3: every object's key, size and ETag. The
Dagster sensor compares it with the one the last ingestion recorded, so new,
changed or deleted images trigger a re-ingest.
"""

from __future__ import annotations

import hashlib
import json

from ctx_core.config import Settings
from ctx_core.ingest.resolve import SourceError, local_source
from ctx_core.ingest.s3 import list_objects, make_client, parse_s3_uri


def source_fingerprint(settings: Settings) -> tuple[str, int]:
    """``(fingerprint, files)`` for the configured source; SourceError when it does not exist."""
    cfg = settings.params.data.ingest
    if cfg.source.startswith("s3://"):
        bucket, prefix = parse_s3_uri(cfg.source)
        client = make_client(settings.params.storage.s3_endpoint_url, cfg.s3_max_attempts, 1, cfg.s3_timeout_s)
        entries = [(o["Key"], o["Size"], o.get("ETag", "")) for o in list_objects(client, bucket, prefix)]
    else:
        path = local_source(settings)
        if path.is_dir():
            entries = sorted(
                (p.relative_to(path).as_posix(), st.st_size, st.st_mtime_ns)
                for p in path.rglob("*") if p.is_file() and (st := p.stat())
            )
        elif path.is_file():
            st = path.stat()
            entries = [(path.name, st.st_size, st.st_mtime_ns)]
        else:
            raise SourceError(f"data.ingest.source = {cfg.source!r}: {path} does not exist")
    blob = json.dumps(entries, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16], len(entries)
