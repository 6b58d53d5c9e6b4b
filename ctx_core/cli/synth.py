"""``ctx synth``: write the synthetic VOC benchmark."""

from __future__ import annotations

import argparse
import json
from typing import Callable

from ctx_core.cli.common import settings_from_args


def cmd_synth(args: argparse.Namespace) -> int:
    from ctx_core.synth.run import run_synth

    flags = {"out": args.out, "images": args.images, "seed": args.seed, "size": args.size, "sprites": args.sprites}
    extra = [f"data.synth.{k}={v}" for k, v in flags.items() if v is not None]
    settings = settings_from_args(args, extra)
    result = run_synth(settings, force=args.force)
    summary = {
        "out": str(result.out),
        "data_version": result.data_version,
        "images": result.images,
        "objects": result.objects,
        "splits": result.split_sizes,
        "classes": result.class_counts,
        "montage": str(result.montage),
        "mlflow_run_id": result.mlflow_run_id,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        splits = ", ".join(f"{k} {v}" for k, v in result.split_sizes.items())
        print(f"wrote {result.images} images ({splits}) with {result.objects} objects to {result.out}")
        print(f"data version {result.data_version}; montage {result.montage}")
    return 0


def register(sub: argparse._SubParsersAction, common_args: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("synth", help="write the synthetic VOC benchmark (data.synth)")
    common_args(p)
    p.add_argument("--out", metavar="DIR", help="output folder (data.synth.out)")
    p.add_argument("--images", type=int, metavar="N", help="number of images (data.synth.images)")
    p.add_argument("--seed", type=int, metavar="S", help="random seed (data.synth.seed)")
    p.add_argument("--size", type=int, metavar="PX", help="longer image side in px (data.synth.size)")
    p.add_argument("--sprites", metavar="DIR", help="RGBA sprites, one sub-folder per class (data.synth.sprites)")
    p.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    p.set_defaults(func=cmd_synth)
