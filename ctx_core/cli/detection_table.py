"""``ctx detection_table``: per-class AP of every fine-tuned init as markdown and CSV."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from ctx_core.cli.common import settings_from_args


def cmd_table(args: argparse.Namespace) -> int:
    from ctx_core.detection.run import run_detection_table

    result = run_detection_table(settings_from_args(args))
    if result.missing:
        print(f"ctx: note: not fine-tuned yet: {', '.join(result.missing)}", file=sys.stderr)
    if args.json:
        print(json.dumps({"rows": result.rows, "markdown": str(result.markdown), "csv": str(result.csv)}, indent=2))
    else:
        print(result.markdown.read_text(), end="")
    return 0


def register(sub: argparse._SubParsersAction, common_args: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("detection_table", aliases=["detection-table"],
                       help="per-class AP of every fine-tuned init as markdown and CSV (detection)")
    common_args(p)
    p.set_defaults(func=cmd_table)
