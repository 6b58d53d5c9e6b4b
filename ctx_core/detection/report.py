"""The paper's Table 1 layout (rows = inits, columns = classes + mAP) and PR curves."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

from ctx_core.detection.evaluate import EvalResult


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
