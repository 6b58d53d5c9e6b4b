"""``ctx discover``: objects discovered from constellations of patches."""

from __future__ import annotations

import argparse
import json
from typing import Callable

from ctx_core.cli.common import settings_from_args


def cmd_discover(args: argparse.Namespace) -> int:
    from ctx_core.discovery.run import run_discover

    result = run_discover(settings_from_args(args))
    if args.json:
        print(json.dumps({"out": str(result.out), "tables": {k: str(v) for k, v in result.tables.items()},
                          "metrics": result.metrics, "reports": {k: str(v) for k, v in result.reports.items()},
                          "mlflow_run_id": result.mlflow_run_id}, indent=2))
        return 0
    for name, m in result.metrics.items():
        if isinstance(m, dict):
            chosen = ", ".join(f"{k.removeprefix('chosen_')} {v:g}" for k, v in m.items() if k.startswith("chosen_"))
            scored = {k: v for k, v in m.items() if k.startswith(("purity", "max_coverage"))}
            print(f"{name}: {m['clusters']} clusters ({chosen})" + "".join(f", {k} {v}" for k, v in scored.items()))
    print(f"tuning: {result.metrics['tuning']}")
    print(f"evaluation: {result.metrics['evaluation']}")
    print(f"clusters {result.tables['learned']}; montage {result.reports['clusters']}")
    return 0


def register(sub: argparse._SubParsersAction, common_args: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("discover", help="discover objects from constellations of patches (discovery)")
    common_args(p)
    p.set_defaults(func=cmd_discover)
