"""``ctx probe``: frozen-feature probes of the encoder and its baselines, with intervals."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from ctx_core.cli.common import settings_from_args


def cmd_probe(args: argparse.Namespace) -> int:
    from ctx_core.probe.run import run_probe

    extra = [f"probe.encoder={args.encoder}"] if args.encoder else []
    result = run_probe(settings_from_args(args, extra))
    if result.skipped:
        print(f"ctx: note: probes skipped: {result.skipped}", file=sys.stderr)
    for note in result.notes if not result.skipped else ():
        print(f"ctx: note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps({
            "skipped": result.skipped,
            "scores": {p: {n: ci.as_dict() for n, ci in by.items()} for p, by in result.scores.items()},
            "differences": {p: {n: ci.as_dict() for n, ci in by.items()} for p, by in result.differences.items()},
            "encoder_version": result.encoder_version, "data_version": result.data_version,
            "reports": {k: str(v) for k, v in result.reports.items()}, "mlflow_run_id": result.mlflow_run_id,
        }, indent=2))
        return 0
    if not result.skipped:
        print(result.reports["table_md"].read_text(), end="")
        print(result.verdict())
        if result.audit:
            a = result.audit
            print(f"position audit (RMSE / centre-guess RMSE, lower = more absolute position): learned "
                  f"{a.ratios['learned'].format(digits=2)}, random_init {a.ratios['random_init'].format(digits=2)}")
            if a.warning():
                print(f"ctx: warning: {a.warning()}", file=sys.stderr)
        print(f"{result.seconds:.0f} s; reports {result.reports['metrics'].parent}")
    return 0


def register(sub: argparse._SubParsersAction, common_args: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("probe", help="frozen-feature probes (VOC07 SVM, kNN, logistic) with bootstrap intervals (probe)")
    common_args(p)
    p.add_argument("--encoder", metavar="REF", help="encoder.pt path, models:/name@alias or models:/name/version (probe.encoder)")
    p.set_defaults(func=cmd_probe)
