"""``ctx extract`` and ``ctx nn``: patch features, and the nearest patches to a box of your own image."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

from ctx_core.cli.common import settings_from_args


def cmd_extract(args: argparse.Namespace) -> int:
    from ctx_core.features.run import run_extract

    extra = [f"features.encoder={args.encoder}"] if args.encoder else []
    result = run_extract(settings_from_args(args, extra))
    summary = {
        "out": str(result.out), "sets": {k: str(v) for k, v in result.sets.items()}, "images": result.images,
        "patches": result.patches, "patches_per_second": {k: round(v, 1) for k, v in result.patches_per_second.items()},
        "data_version": result.data_version, "neighbours": str(result.reports["neighbours"]),
        "mlflow_run_id": result.mlflow_run_id,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        rates = ", ".join(f"{k} {v:.0f}" for k, v in result.patches_per_second.items())
        print(f"extracted {result.patches} patches from {result.images} images into {result.out} ({', '.join(result.sets)})")
        print(f"patches/s: {rates}; neighbours montage {result.reports['neighbours']}")
    return 0


def cmd_nn(args: argparse.Namespace) -> int:
    from ctx_core.features.query import matches_png, nearest_patches, parse_box
    from ctx_core.feature_store import LEARNED
    from ctx_core.feature_store import FeatureSet

    settings = settings_from_args(args)
    box = parse_box(args.box)
    matches = nearest_patches(settings, args.image, box, args.k)
    print(json.dumps([m.as_dict() for m in matches], indent=2))
    if args.png:
        store = Path(FeatureSet.open(settings.path(settings.params.features.out) / LEARNED).meta["store"])
        matches_png(args.image, box, matches, store, Path(args.png))
    return 0


def register(sub: argparse._SubParsersAction, common_args: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("extract", help="patch features of the encoder and baselines (features)")
    common_args(p)
    p.add_argument("--encoder", metavar="REF", help="encoder.pt path, models:/name@alias or models:/name/version (features.encoder)")
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("nn", help="nearest patches to a box of your own image (prints JSON)")
    common_args(p)
    p.add_argument("--image", required=True, metavar="IMG", help="an image file, or an image id of the store")
    p.add_argument("--box", required=True, metavar="X0,Y0,X1,Y1", help="the patch: 0-based pixels, end exclusive")
    p.add_argument("--k", type=int, default=10, metavar="K", help="number of matches (default 10)")
    p.add_argument("--png", metavar="FILE", help="also save the query and its matches as a PNG")
    p.set_defaults(func=cmd_nn)
