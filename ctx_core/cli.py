"""``ctx``: one subcommand per pipeline stage.

Every subcommand takes ``--params FILE`` (default ``params.yaml``) and
repeatable ``--set section.key=value``. A user error prints one line,
``ctx: error: ...``, and exits with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from ctx_core.config import Settings, load_params
from ctx_core.errors import UserError


def common_args(p: argparse.ArgumentParser) -> None:
    """--params, --set and --json, shared by every subcommand."""
    p.add_argument("--params", metavar="FILE", help="params file (default: ./params.yaml)")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override one setting, e.g. --set pretrain.lr=0.01 (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def settings_from_args(args: argparse.Namespace, extra: Sequence[str] = ()) -> Settings:
    """Params from ``--params`` with ``--set`` overrides, then ``extra`` (from a stage's own flags)."""
    return load_params(args.params, [*args.overrides, *extra])


def _stage_registrars() -> list[Callable]:
    """Each stage module's ``register(subparsers, common_args)``; one line per stage."""
    from ctx_core import compare_cli
    from ctx_core.detection import cli as detection_cli
    from ctx_core.discovery import cli as discovery_cli
    from ctx_core.ingest import cli as ingest_cli
    from ctx_core.pretext import cli as pretext_cli
    from ctx_core.synth import cli as synth_cli

    return [synth_cli.register, ingest_cli.register, pretext_cli.register, discovery_cli.register, detection_cli.register,
            compare_cli.register]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ctx", description="Context-prediction pretraining pipeline.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for register in _stage_registrars():
        register(sub, common_args)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UserError as exc:
        print(f"ctx: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ctx: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
