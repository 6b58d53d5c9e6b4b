"""Downloading ``s3://bucket/prefix`` into a local folder, in parallel, with retries.

A listing or download that still fails after its retries is an outage, not bad
data: ingestion stops with one line naming how many objects failed and why,
before anything is written, so the previous store stays as it was. Only what
was downloaded and then cannot be decoded is quarantined.

Credentials come only from the standard AWS chain (environment, shared
config/credentials files, instance or container roles); they are never read
from params and never logged. The endpoint (MinIO, moto, another S3-compatible
store) comes from params ``storage.s3_endpoint_url`` or ``AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from ctx_core.errors import UserError
from ctx_core.ingest.quarantine import TOO_LARGE, UNSAFE_MEMBER, Rejected


class S3SourceError(UserError):
    """The bucket or prefix cannot be listed, or its objects cannot be downloaded; the message is one line."""


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``('bucket', 'a/b/')``: the prefix is a folder, so ``a/b`` never matches ``a/bc``."""
    rest = uri[len("s3://"):]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise S3SourceError(f"source {uri!r} has no bucket; expected s3://bucket/prefix")
    prefix = prefix.strip("/")
    return bucket, (prefix + "/" if prefix else "")


def make_client(endpoint_url: str | None, max_attempts: int, threads: int, timeout_s: float = 60.0) -> Any:
    """A boto3 S3 client with botocore's standard retry mode and a connection per thread.

    ``timeout_s`` bounds each connect and each socket read, so a hung endpoint costs
    at most about ``max_attempts`` x ``timeout_s`` plus backoff per request."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"total_max_attempts": max_attempts, "mode": "standard"},
        max_pool_connections=max(10, threads),
        connect_timeout=timeout_s,
        read_timeout=timeout_s,
    )
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
    return boto3.client("s3", endpoint_url=endpoint, config=config)


def list_objects(client: Any, bucket: str, prefix: str, page_size: int = 1000) -> list[dict[str, Any]]:
    """Every object under ``prefix`` (``Key``, ``Size``), across all pages, sorted by key."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    where = f"s3://{bucket}/{prefix}"
    try:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}
        )
        objects = [obj for page in pages for obj in page.get("Contents", [])]
    except NoCredentialsError:
        raise S3SourceError(
            f"no AWS credentials for {where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
        ) from None
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise S3SourceError(f"cannot list {where}: {code} ({exc.response.get('Error', {}).get('Message', '')})") from None
    except BotoCoreError as exc:
        raise S3SourceError(f"cannot list {where}: {exc}") from None
    return sorted(objects, key=lambda o: o["Key"])


def download_prefix(
    uri: str,
    dest: Path,
    wanted: Callable[[str], bool],
    *,
    endpoint_url: str | None,
    max_attempts: int,
    threads: int,
    max_bytes: int,
    timeout_s: float = 60.0,
    page_size: int = 1000,
) -> tuple[list[Rejected], int]:
    """Download the objects under ``uri`` that ``wanted(key)`` accepts into ``dest``, keeping their relative paths.

    Returns the refused objects (unsafe keys, too large) and the number of
    objects skipped because ``wanted`` declined them. Raises :class:`S3SourceError`
    when an object cannot be downloaded after ``max_attempts`` tries; the
    downloads not yet started are then not tried.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    from boto3.s3.transfer import TransferConfig

    bucket, prefix = parse_s3_uri(uri)
    client = make_client(endpoint_url, max_attempts, threads, timeout_s)
    # s3transfer retries a broken body stream on its own (5 times by default): keep it to the same budget
    transfer = TransferConfig(num_download_attempts=max_attempts)
    rejected: list[Rejected] = []
    jobs: list[tuple[str, Path, str]] = []
    ignored = 0
    for obj in list_objects(client, bucket, prefix, page_size):
        key = obj["Key"]
        source = f"s3://{bucket}/{key}"
        rel = key[len(prefix):]
        if key.endswith("/"):
            continue
        parts = PurePosixPath(rel).parts
        if rel.startswith("/") or ".." in parts or not parts:
            rejected.append(Rejected(source, UNSAFE_MEMBER, "unsafe object key: path leaves the prefix"))
        elif not wanted(key):
            ignored += 1
        elif obj["Size"] > max_bytes:
            rejected.append(Rejected(source, TOO_LARGE, f"object over the size limit ({obj['Size']} > {max_bytes} bytes)"))
        else:
            jobs.append((key, dest.joinpath(*parts), source))

    stop = threading.Event()  # set by the first failure: an outage rarely spares the next object

    def fetch(job: tuple[str, Path, str]) -> str | None:
        """None when downloaded; else why not (``""`` when not tried after an earlier failure)."""
        key, path, source = job
        if stop.is_set():
            return ""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, key, str(path), Config=transfer)
        except (ClientError, BotoCoreError, OSError) as exc:
            stop.set()
            path.unlink(missing_ok=True)
            return f"{source}: {exc}"
        return None

    with ThreadPoolExecutor(threads) as pool:
        outcomes = list(pool.map(fetch, jobs))
    failed = [why for why in outcomes if why]
    if failed:
        untried = sum(why == "" for why in outcomes)
        first = " ".join(failed[0].split()).rstrip(".")
        raise S3SourceError(
            f"{len(failed) + untried} of {len(jobs)} objects under {uri} could not be downloaded "
            f"({len(failed)} failed after {max_attempts} tries, {untried} not tried), e.g. {first}; "
            f"ingestion stopped and wrote nothing: check the endpoint and credentials, then rerun "
            f"(tries and timeouts: data.ingest.s3_max_attempts, data.ingest.s3_timeout_s)"
        )
    return rejected, ignored
