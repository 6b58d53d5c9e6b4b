"""``ctx detection_table``: per-class AP of every fine-tuned init (mean over seeds, mAP with its
interval) and the paired differences of the inits, as markdown, CSV and a chart."""

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
        print(json.dumps({"rows": result.rows, "intervals": {k: v.as_dict() for k, v in result.intervals.items()},
                          "per_seed": result.per_seed, "paired_differences": result.lines,
                          "markdown": str(result.markdown), "csv": str(result.csv), "chart": str(result.chart),
                          "summary": str(result.summary)}, indent=2))
    else:
        print(result.markdown.read_text(), end="")
    return 0


def register(sub: argparse._SubParsersAction, common_args: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("detection_table", aliases=["detection-table"],
                       help="per-class AP of every fine-tuned init as markdown and CSV (detection)")
    common_args(p)
    p.set_defaults(func=cmd_table)
