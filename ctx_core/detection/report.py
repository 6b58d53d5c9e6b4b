"""The paper's Table 1 layout (rows = inits, columns = classes + mAP) with the mAP's
interval over seeds, the paired differences of the inits, and plots."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

from ctx_core.detection.evaluate import EvalResult
from ctx_core.stats import Interval


def ap_table_rows(rows: Mapping[str, Mapping[str, float]], classes: Sequence[str]) -> list[list[str]]:
    """Header + one row per init; ``rows[init]`` maps class -> AP in [0, 1] and ``mAP``. Cells in %, 1 decimal."""
    out = [["init", *classes, "mAP"]]
    for init, aps in rows.items():
        out.append([init, *(f"{100 * aps.get(c, float('nan')):.1f}" for c in classes), f"{100 * aps['mAP']:.1f}"])
    return out


def ap_table_markdown(rows: Mapping[str, Mapping[str, float]], classes: Sequence[str], metric: str) -> str:
    table = ap_table_rows(rows, classes)
    lines = ["| " + " | ".join(table[0]) + " |", "| --- |" + " ---: |" * (len(table[0]) - 1)]
    lines += ["| " + " | ".join(r) + " |" for r in table[1:]]
    return f"Per-class AP (%), metric {metric}\n\n" + "\n".join(lines) + "\n"


def _seeds(per_seed: Mapping[str, float]) -> str:
    return ", ".join(f"{k}: {100 * v:.1f}" for k, v in per_seed.items())


def seeds_table_markdown(rows: Mapping[str, Mapping[str, float]], intervals: Mapping[str, Interval],
                         per_seed: Mapping[str, Mapping[str, float]], classes: Sequence[str], metric: str,
                         split: str) -> str:
    """Per-class AP (mean over seeds) and mAP as mean [95 % CI over seeds], n, and each seed's mAP."""
    head = ["init", *classes, "mAP [95 % CI]", "n", "mAP per seed"]
    lines = [f"AP (%) on split `{split}`, metric {metric}: per class the mean over seeds; mAP with its 95 % "
             "t-interval over seeds (no interval from one seed)", "",
             "| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(classes) + 2) + " --- |"]
    for init, aps in rows.items():
        ci = intervals[init]
        mean = ci.format(100).rsplit(", n=", 1)[0]
        lines.append("| " + " | ".join([init, *(f"{100 * aps.get(c, float('nan')):.1f}" for c in classes), mean,
                                         str(ci.n), _seeds(per_seed[init])]) + " |")
    return "\n".join(lines) + "\n"


def paired_lines(differences: Mapping[tuple[str, str], Interval], unit: str = "mAP") -> list[str]:
    """``a − b = +8.0 [+3.1, +12.9] mAP, n=3: beyond noise`` for each pair; a ranking is claimed
    only when the interval excludes 0."""
    out = []
    for (a, b), d in differences.items():
        verdict = ("beyond noise" if d.excludes_zero else
                   "within noise, no ranking claimed" if d.defined else "one common seed: no interval, no ranking claimed")
        out.append(f"{a} − {b} = {d.format(100, signed=True, unit=unit)}: {verdict}")
    return out


def intervals_chart(intervals: Mapping[str, Interval], per_seed: Mapping[str, Mapping[str, float]], path: Path,
                    title: str, xlabel: str = "mAP (%)") -> Path:
    """One bar per row at its mean, the 95 % interval as an error bar, each seed's value as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(intervals)
    fig, ax = plt.subplots(figsize=(6.4, 0.55 * len(names) + 1.3), dpi=100)
    for y, name in enumerate(names):
        ci = intervals[name]
        ax.barh(y, 100 * ci.mean, color=plt.cm.tab10(y % 10), alpha=0.55)
        if ci.defined:
            ax.errorbar(100 * ci.mean, y, xerr=[[100 * (ci.mean - ci.low)], [100 * (ci.high - ci.mean)]],
                        color="black", capsize=4, lw=1.2)
        values = list(per_seed.get(name, {}).values())
        ax.scatter([100 * v for v in values], [y] * len(values), color="black", s=12, zorder=3)
        ax.text(100 * (ci.high if ci.defined else ci.mean) + 0.5, y, f"{100 * ci.mean:.1f} (n={ci.n})", va="center",
                fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def ap_table_csv(rows: Mapping[str, Mapping[str, float]], classes: Sequence[str]) -> str:
    """AP in [0, 1] with 4 decimals, one row per init."""
    lines = [",".join(["init", *classes, "mAP"])]
    for init, aps in rows.items():
        lines.append(",".join([init, *(f"{aps.get(c, float('nan')):.4f}" for c in classes), f"{aps['mAP']:.4f}"]))
    return "\n".join(lines) + "\n"


def pr_curves_plot(result: EvalResult, path: Path, title: str) -> Path:
    """One precision-recall panel per class, AP in its title; saved as PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(result.classes))
    cols = min(5, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.3 * rows + 0.4), dpi=90, squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, cls in zip(axes.flat, result.classes):
        r = result.per_class[cls]
        ax.plot(r.recall, r.precision, color="#3b75af", lw=1.2)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{cls}: AP {100 * r.ap:.1f}", fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"{title} — mAP {100 * result.mean_ap:.1f} ({result.metric})", fontsize=10)
    fig.supxlabel("recall", fontsize=8)
    fig.supylabel("precision", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
