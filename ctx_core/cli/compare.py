"""``ctx compare``: registered detector versions side by side and grouped over seeds;
the champion alias moved; whether the champion's lead is beyond noise.
``ctx task_table``: the pretext tasks side by side (``make task-study``)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from ctx_core.cli.common import settings_from_args


def cmd_compare(args: argparse.Namespace) -> int:
    from ctx_core.compare import run_compare

    result = run_compare(settings_from_args(args), move_alias=not args.no_alias)
    for note in result.notes:
        print(f"ctx: note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps({
            "model": result.model,
            "champion": result.champion.version if result.champion else None,
            "previous_champion": result.previous_champion,
            "alias_moved": result.alias_moved,
            "encoder_champion": result.encoder_champion,
            "ranked_by": result.ranked_by,
            "lead": None if result.lead is None else result.lead.as_dict(),
            "lead_beyond_noise": result.lead_beyond_noise,
            "lead_sentence": result.lead_sentence,
            "groups": [{"init": g.init, "encoder_version": g.encoder, "data_version": g.data_version, "n": g.n,
                        "seeds": [r.seed for r in g.runs], "versions": [r.version for r in g.runs],
                        "val_mAP": g.interval("val_mAP").as_dict(), "mAP": g.interval("mAP").as_dict(),
                        "problem": g.problem} for g in result.groups],
            "rows": [{"version": r.version, "init": r.init, "encoder_version": r.encoder, "seed": r.seed,
                      "data_version": r.data_version, "val_mAP": r.val_map, "mAP": r.mean_ap, "ap": r.ap,
                      "problem": r.problem}
                     for r in result.rows],
            "encoders": [{"encoder_version": p.encoder, "task": p.task, "run_id": p.run_id, "data_version": p.data_version,
                          **{k: x.as_dict() for k, x in p.scores.items()}} for p in result.encoders],
            "encoder_lead_beyond_noise": result.encoder_lead_beyond_noise,
            "encoder_sentence": result.encoder_sentence,
            "markdown": str(result.markdown), "csv": str(result.csv), "groups_csv": str(result.groups_csv),
            "chart": str(result.chart),
            "mlflow_run_id": result.mlflow_run_id,
        }, indent=2))
        return 0
    print(result.markdown.read_text(), end="")
    if result.champion:
        alias = f"{result.model}@{result.alias}"
        moved = ("would move to (--no-alias: left unchanged)" if args.no_alias
                 else "moved to" if result.alias_moved else "stays at")
        print(f"\n{alias} {moved} version {result.champion.version} ({result.champion.init}, "
              f"mAP {100 * result.champion.mean_ap:.1f}, best group by {result.ranked_by})"
              + (f"; encoder alias -> {result.encoder_champion}" if result.encoder_champion else ""))
        print(f"lead over the runner-up: {result.lead_sentence}")
    print(f"encoders by probe score: {result.encoder_sentence}")
    return 0


def cmd_task_table(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ctx_core.compare.tasks import TASKS, run_task_table

    settings = settings_from_args(args)
    tasks = args.tasks or list(TASKS)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        from ctx_core.errors import UserError

        raise UserError(f"--tasks {' '.join(unknown)}: unknown; the tasks are {', '.join(TASKS)}")
    rows, leads, files = run_task_table(settings.path(Path(args.root)), tasks)
    if args.json:
        print(files["summary"].read_text(), end="")
    else:
        print(files["table_md"].read_text(), end="")
    return 0


def register(sub: argparse._SubParsersAction, common_args: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("compare", help="compare registered detector versions; move the champion alias (registry)")
    common_args(p)
    p.add_argument("--no-alias", action="store_true", help="write the table only; leave the aliases where they are")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("task_table", aliases=["task-table"],
                       help="the pretext tasks side by side: probe scores and detection mAP with intervals")
    common_args(p)
    p.add_argument("--root", default="reports/tasks", help="the task study's reports (<root>/<task>/...)")
    p.add_argument("--tasks", nargs="*", metavar="TASK", help="tasks to show (default: all)")
    p.set_defaults(func=cmd_task_table)
