"""What pretraining steps buy: pretext accuracy and the frozen-feature probe against steps (issue 17's budget).

For each ``--steps N``: ``ctx pretrain`` with ``pretrain.steps=N`` (everything else the default params,
or ``--set`` overrides) into ``ROOT/steps<N>/``, then ``ctx probe`` of that encoder; a run whose
``metrics.json`` files exist is reused, so points can be added later. Writes ``ROOT/curve.csv`` and
``ROOT/curve.png`` (pretext test accuracy and VOC07 SVM mAP with its 95 % interval, against steps,
the pretraining wall seconds on this CPU beside each point).

    .venv/bin/python benchmarks/budget_curve.py --steps 100 300 1000 [--root reports/budget] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

from cpu import cpu_model  # benchmarks/cpu.py (scripts run from benchmarks/)

ROOT = Path(__file__).resolve().parent.parent
CTX = str(Path(sys.executable).parent / "ctx")


def run_point(steps: int, root: Path, sets: list[str]) -> dict:
    out = root / f"steps{steps}"
    pre_metrics, probe_metrics = out / "pretrain/metrics.json", out / "probe/metrics.json"
    extra = [a for s in sets for a in ("--set", s)]
    seconds = None
    if not pre_metrics.exists():
        t = time.perf_counter()
        subprocess.run([CTX, "pretrain", "--set", f"pretrain.steps={steps}", "--set", f"pretrain.out={out}/model",
                        "--set", f"pretrain.reports={out}/pretrain", *extra], cwd=ROOT, check=True)
        seconds = time.perf_counter() - t
        (out / "seconds.json").write_text(json.dumps({"pretrain_seconds": seconds, "cpu": cpu_model()}))
    if not probe_metrics.exists():
        subprocess.run([CTX, "probe", "--set", f"probe.encoder={out}/model/encoder.pt",
                        "--set", f"probe.reports={out}/probe", "--set", "probe.audit_patches=0", *extra],
                       cwd=ROOT, check=True)
    pre, probe = json.loads(pre_metrics.read_text()), json.loads(probe_metrics.read_text())
    timing = json.loads((out / "seconds.json").read_text()) if (out / "seconds.json").exists() else {}
    return {"steps": steps, "pretext_test_accuracy": pre["held_out_accuracy"],
            "pretext_chance": pre.get("chance_accuracy"),
            "svm_map": 100 * probe["svm_map_learned"], "svm_map_low": 100 * probe["svm_map_learned_low"],
            "svm_map_high": 100 * probe["svm_map_learned_high"],
            "svm_map_random_init": 100 * probe["svm_map_random_init"],
            "pretrain_seconds": timing.get("pretrain_seconds"), "cpu": timing.get("cpu")}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["steps"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    a.plot(steps, [r["pretext_test_accuracy"] for r in rows], "o-")
    if rows[0]["pretext_chance"]:
        a.axhline(rows[0]["pretext_chance"], color="grey", ls=":", label="chance")
        a.legend(loc="lower right")
    a.set(xscale="log", xlabel="pretraining steps", ylabel="pretext test accuracy", title="pretext task")
    svm = [r["svm_map"] for r in rows]
    err = [[r["svm_map"] - r["svm_map_low"] for r in rows], [r["svm_map_high"] - r["svm_map"] for r in rows]]
    b.errorbar(steps, svm, yerr=err, fmt="o-", capsize=3, label="learned (95 % CI)")
    b.axhline(rows[0]["svm_map_random_init"], color="grey", ls=":", label="random-init tower")
    b.set(xscale="log", xlabel="pretraining steps", ylabel="VOC07 SVM mAP (%)", title="frozen-feature probe (test)")
    b.legend(loc="lower right")
    for r in rows:
        if r["pretrain_seconds"]:
            b.annotate(f"{r['pretrain_seconds'] / 60:.0f} min", (r["steps"], r["svm_map"]),
                       textcoords="offset points", xytext=(4, -12), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", required=True)
    parser.add_argument("--root", type=Path, default=ROOT / "reports/budget")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="extra override, repeatable")
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    rows = sorted((run_point(n, args.root, args.sets) for n in args.steps), key=lambda r: r["steps"])
    with open(args.root / "curve.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot(rows, args.root / "curve.png")
    print(f"CPU: {cpu_model()}\n\n| steps | pretext test accuracy | VOC07 SVM mAP [95 % CI] | pretraining s |")
    print("| ---: | ---: | ---: | ---: |")
    for r in rows:
        sec = f"{r['pretrain_seconds']:.0f}" if r["pretrain_seconds"] else "(earlier run)"
        print(f"| {r['steps']} | {r['pretext_test_accuracy']:.3f} | {r['svm_map']:.1f} "
              f"[{r['svm_map_low']:.1f}, {r['svm_map_high']:.1f}] | {sec} |")
    print(f"\n{args.root / 'curve.csv'}, {args.root / 'curve.png'}")


if __name__ == "__main__":
    main()
