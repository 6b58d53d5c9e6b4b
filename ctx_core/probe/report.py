"""The probe table (markdown, CSV) and its bar chart with the 95 % intervals."""

from __future__ import annotations

import math
from pathlib import Path

from ctx_core.stats import Interval

LABELS = {
    "svm_map": "VOC07 SVM mAP (image features)",
    "knn_top1": "kNN top-1 (object crops, k=20, T=0.07)",
    "logreg_top1": "logistic top-1 (object crops)",
}


def _cell(ci: Interval, signed: bool = False) -> str:
    if not math.isfinite(ci.mean):
        return "n/a"
    return ci.format(100, signed=signed).rsplit(", n=", 1)[0]


def probe_table_markdown(scores: dict[str, dict[str, Interval]], differences: dict[str, dict[str, Interval]],
                         test_images: int, test_crops: int, split: str) -> str:
    names = list(next(iter(scores.values())))
    head = ["probe", *names, *(f"learned − {n}" for n in names[1:])]
    lines = [f"Frozen-feature probes on split `{split}` ({test_images} images, {test_crops} object crops), %; "
             "95 % percentile-bootstrap intervals over test images; differences paired on the same resamples", "",
             "| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for p, by in scores.items():
        cells = [LABELS.get(p, p), *(_cell(by[n]) for n in names),
                 *(_cell(differences[p][n], signed=True) for n in names[1:])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def probe_table_csv(scores: dict[str, dict[str, Interval]]) -> str:
    lines = ["probe,featuriser,score,low,high,n"]
    for p, by in scores.items():
        for n, ci in by.items():
            lines.append(f"{p},{n},{ci.mean:.4f},{ci.low:.4f},{ci.high:.4f},{ci.n}")
    return "\n".join(lines) + "\n"


def probe_chart(scores: dict[str, dict[str, Interval]], path: Path, title: str) -> Path:
    """One panel per probe: a bar per featuriser with its interval as an error bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(scores), figsize=(3.3 * len(scores), 3.2), dpi=100, squeeze=False)
    for ax, (p, by) in zip(axes[0], scores.items()):
        names = list(by)
        for x, n in enumerate(names):
            ci = by[n]
            value = 100 * ci.mean if math.isfinite(ci.mean) else 0.0
            ax.bar(x, value, color=plt.cm.tab10(x % 10), alpha=0.75)
            if ci.defined:
                # a percentile-bootstrap interval need not contain the point estimate: clip the arms at 0
                ax.errorbar(x, value, yerr=[[max(0.0, value - 100 * ci.low)], [max(0.0, 100 * ci.high - value)]],
                            color="black", capsize=4)
            ax.text(x, (100 * ci.high if ci.defined else value) + 1, f"{value:.1f}", ha="center", fontsize=8)
        ax.set_xticks(range(len(names)), names, fontsize=8, rotation=15)
        ax.set_title(LABELS.get(p, p), fontsize=8)
        ax.set_ylim(0, 105)
    axes[0][0].set_ylabel("%")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
