"""``ctx ingest``: any image source into the store every later stage reads."""

from __future__ import annotations

import argparse
import json
from typing import Callable

from ctx_core.cli.common import settings_from_args


def cmd_ingest(args: argparse.Namespace) -> int:
    from ctx_core.ingest.run import run_ingest

    flags = {"source": args.source, "out": args.out, "workers": args.workers}
    extra = [f"data.ingest.{k}={v}" for k, v in flags.items() if v is not None]
    settings = settings_from_args(args, extra)
    result = run_ingest(settings, force=args.force)
    if args.json:
        print(json.dumps(result.summary(), indent=2))
        return 0
    splits = ", ".join(f"{k} {v}" for k, v in result.split_sizes.items() if v)
    print(f"ingested {len(result.ingested)} images ({splits}) with {result.objects} boxes into {result.store}")
    if result.quarantined:
        reasons = ", ".join(f"{n} {kind}" for kind, n in result.summary()["counts"]["quarantined_by_reason"].items())
        print(f"quarantined {len(result.quarantined)} ({reasons}): see {result.reports['quarantine']}")
    print(f"data version {result.data_version}")
    return 0


def register(sub: argparse._SubParsersAction, common_args: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("ingest", help="turn a folder, VOC root, archive or S3 prefix into the image store (data.ingest)")
    common_args(p)
    p.add_argument("--source", metavar="SRC",
                   help="folder, VOC root, .tar/.tar.gz/.tgz/.zip or s3://bucket/prefix (data.ingest.source)")
    p.add_argument("--out", metavar="DIR", help="store folder (data.ingest.out)")
    p.add_argument("--workers", type=int, metavar="N", help="processes, 0 = all cores (data.ingest.workers)")
    p.add_argument("--force", action="store_true", help="replace a non-empty store folder")
    p.set_defaults(func=cmd_ingest)
