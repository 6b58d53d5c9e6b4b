"""``ctx``: one subcommand per pipeline stage.

Every subcommand takes ``--params FILE`` (default ``params.yaml``) and
repeatable ``--set section.key=value``. A user error prints one line,
``ctx: error: ...``, and exits with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

from ctx_core.config import ConfigError, Settings, load_params
from ctx_core.fsutil import OutputError

USER_ERRORS = (ConfigError, OutputError)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", metavar="FILE", help="params file (default: ./params.yaml)")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override one setting, e.g. --set pretrain.lr=0.01 (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _settings(args: argparse.Namespace, extra: Sequence[str] = ()) -> Settings:
    return load_params(args.params, [*args.overrides, *extra])


def cmd_synth(args: argparse.Namespace) -> int:
    from ctx_core.synth.run import run_synth

    flags = {"out": args.out, "images": args.images, "seed": args.seed, "size": args.size, "sprites": args.sprites}
    extra = [f"data.synth.{k}={v}" for k, v in flags.items() if v is not None]
    settings = _settings(args, extra)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ctx", description="Context-prediction pretraining pipeline.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synth", help="write the synthetic VOC benchmark (data.synth)")
    _common(p)
    p.add_argument("--out", metavar="DIR", help="output folder (data.synth.out)")
    p.add_argument("--images", type=int, metavar="N", help="number of images (data.synth.images)")
    p.add_argument("--seed", type=int, metavar="S", help="random seed (data.synth.seed)")
    p.add_argument("--size", type=int, metavar="PX", help="longer image side in px (data.synth.size)")
    p.add_argument("--sprites", metavar="DIR", help="RGBA sprites, one sub-folder per class (data.synth.sprites)")
    p.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    p.set_defaults(func=cmd_synth)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except USER_ERRORS as exc:
        print(f"ctx: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ctx: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
