"""What every ``ctx`` subcommand shares: ``--params``, ``--set``, ``--json``, and the settings they make."""

from __future__ import annotations

import argparse
from typing import Sequence

from ctx_core.config import Settings, load_params


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
