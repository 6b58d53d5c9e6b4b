"""The pretext tasks side by side (``ctx task_table``, the last step of ``make task-study``).

``scripts/task-study.sh`` trains one encoder per task with the same tower and the same
tower passes per step (``pretrain.tower_passes``) for the same steps, probes each
(``ctx probe``) and fine-tunes a detector on each over seeds (``ctx finetune --init
context``), under ``<root>/<task>/{pretrain,probe,detection}``. This module reads
those reports and writes the table:

- pretext test accuracy and its chance level (each task's own: not comparable across tasks);
- the probe scores with their bootstrap 95 % intervals over test images, and each task
  minus the best, **paired** on the same bootstrap resamples (every probe of one store
  draws the same resamples: ``probe.bootstrap``, ``probe.seed``);
- detection test mAP, mean over seeds with its t-interval, and each task minus the
  best, paired by seed.

The best task by each measure is named, with whether its lead over the runner-up is
beyond noise (the paired interval excludes 0).
"""

from __future__ import annotations

import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ctx_core.config import PretrainConfig
from ctx_core.errors import UserError
from ctx_core.stats import Interval, json_finite, paired_difference, t_interval

TASKS: tuple[str, ...] = typing.get_args(PretrainConfig.model_fields["task"].annotation)
PROBE_SCORES = (("svm_map", "VOC07 SVM mAP"), ("knn_top1", "kNN top-1"), ("logreg_top1", "logistic top-1"))
LEARNED = "learned"


@dataclass
class TaskRow:
    task: str
    pretext_accuracy: float = float("nan")
    chance: float = float("nan")
    steps: int = 0
    tower_passes_per_second: float = float("nan")
    probes: dict[str, Interval] = field(default_factory=dict)
    resamples: dict[str, np.ndarray] = field(default_factory=dict)  # score -> (1 + B,) values
    test_images: tuple[str, ...] = ()
    detection: Interval | None = None
    per_seed: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Lead:
    measure: str
    best: str
    runner_up: str | None
    difference: Interval | None  # best - runner-up, paired

    def sentence(self, scale: float = 100.0, unit: str = "") -> str:
        if self.runner_up is None or self.difference is None:
            return f"{self.measure}: {self.best} (no other task to compare)"
        verdict = "beyond noise" if self.difference.excludes_zero else "within noise: no ranking claimed"
        return (f"{self.measure}: {self.best} leads {self.runner_up} by "
                f"{self.difference.format(scale, signed=True, unit=unit)} ({verdict})")


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is unreadable ({exc.__class__.__name__}); rerun that step of the task study") from None


def _interval(metrics: dict, name: str, n: int) -> Interval:
    def get(key: str) -> float:
        v = metrics.get(key)
        return float(v) if isinstance(v, (int, float)) else float("nan")
    return Interval(get(name), get(f"{name}_low"), get(f"{name}_high"), n)


def read_task(root: Path, task: str) -> TaskRow:
    """One task's row from ``root/<task>/{pretrain,probe,detection}``; missing parts stay empty."""
    folder = root / task
    row = TaskRow(task)
    pre = _json(folder / "pretrain" / "metrics.json")
    row.pretext_accuracy = float(pre.get("held_out_accuracy", float("nan")) or float("nan"))
    row.chance = float(pre.get("chance_accuracy", float("nan")) or float("nan"))
    row.steps = int(pre.get("steps", 0) or 0)
    row.tower_passes_per_second = float(pre.get("tower_passes_per_second", float("nan")) or float("nan"))
    probe = _json(folder / "probe" / "metrics.json")
    n_test = int(probe.get("test_images", 0) or 0)
    for score, _ in PROBE_SCORES:
        if f"{score}_{LEARNED}" in probe:
            row.probes[score] = _interval(probe, f"{score}_{LEARNED}", n_test)
    npz = folder / "probe" / "per_resample.npz"
    if npz.is_file():
        with np.load(npz, allow_pickle=False) as z:
            row.test_images = tuple(str(x) for x in z["test_images"])
            row.resamples = {score: z[f"{score}__{LEARNED}"] for score, _ in PROBE_SCORES if f"{score}__{LEARNED}" in z}
    det = _json(folder / "detection" / "inits" / "context" / "metrics.json")
    if det:
        row.per_seed = {str(k): float(v) for k, v in (det.get("per_seed") or {}).items() if v is not None}
        row.detection = t_interval(list(row.per_seed.values())) if row.per_seed else None
    return row


def paired_resamples(a: TaskRow, b: TaskRow, score: str) -> Interval | None:
    """``a - b`` on ``score``, resample by resample (percentile interval); None when the two were not
    probed on the same test images with the same resamples."""
    if score not in a.resamples or score not in b.resamples or a.test_images != b.test_images \
            or a.resamples[score].shape != b.resamples[score].shape:
        return None
    d = a.resamples[score] - b.resamples[score]
    rest = d[1:][np.isfinite(d[1:])]
    if len(rest) < 10:
        return Interval(float(d[0]), float("nan"), float("nan"), len(a.test_images))
    low, high = np.percentile(rest, [2.5, 97.5])
    return Interval(float(d[0]), float(low), float(high), len(a.test_images))


def leads(rows: Sequence[TaskRow]) -> list[Lead]:
    """The best task by each probe score and by detection mAP, against the runner-up, paired."""
    out = []
    for score, title in PROBE_SCORES:
        have = sorted((r for r in rows if score in r.probes and math.isfinite(r.probes[score].mean)),
                      key=lambda r: -r.probes[score].mean)
        if have:
            diff = paired_resamples(have[0], have[1], score) if len(have) > 1 else None
            out.append(Lead(title, have[0].task, have[1].task if len(have) > 1 else None, diff))
    have = sorted((r for r in rows if r.detection is not None and math.isfinite(r.detection.mean)),
                  key=lambda r: -r.detection.mean)
    if have:
        diff = paired_difference(have[0].per_seed, have[1].per_seed) if len(have) > 1 else None
        out.append(Lead("detection test mAP", have[0].task, have[1].task if len(have) > 1 else None, diff))
    return out


def _fmt(ci: Interval | None, scale: float = 100.0) -> str:
    return ci.format(scale) if ci is not None and math.isfinite(ci.mean) else "not run"


def table_markdown(rows: Sequence[TaskRow], found: Sequence[Lead]) -> str:
    lines = ["| task | steps | pretext test accuracy (chance) | " + " | ".join(t for _, t in PROBE_SCORES)
             + " | detection test mAP over seeds |",
             "| --- | ---: | ---: | " + " | ".join("---:" for _ in PROBE_SCORES) + " | ---: |"]
    for r in rows:
        acc = f"{r.pretext_accuracy:.3f} ({r.chance:.3f})" if math.isfinite(r.pretext_accuracy) else "not run"
        lines.append(f"| {r.task} | {r.steps} | {acc} | " + " | ".join(_fmt(r.probes.get(s)) for s, _ in PROBE_SCORES)
                     + f" | {_fmt(r.detection)} |")
    lines += ["", "Probe intervals: 95 % percentile bootstrap over test images; detection: 95 % t-interval over "
              "seeds. Differences are paired (the same resamples; the same seeds).", ""]
    lines += [f"- {lead.sentence()}" for lead in found]
    return "\n".join(lines) + "\n"


def chart(rows: Sequence[TaskRow], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measures = [(s, t) for s, t in PROBE_SCORES] + [("detection", "detection mAP")]
    fig, axes = plt.subplots(1, len(measures), figsize=(3.2 * len(measures), 3.2), dpi=100)
    for ax, (key, title) in zip(axes, measures):
        cis = [(r.task, r.detection if key == "detection" else r.probes.get(key)) for r in rows]
        cis = [(t, c) for t, c in cis if c is not None and math.isfinite(c.mean)]
        for k, (task, ci) in enumerate(cis):
            err = [[100 * (ci.mean - ci.low)], [100 * (ci.high - ci.mean)]] if ci.defined else None
            ax.bar(k, 100 * ci.mean, yerr=err, capsize=4, color=f"C{k}")
        ax.set_xticks(range(len(cis)), [t for t, _ in cis], rotation=30)
        ax.set_title(title, fontsize=9)
    fig.suptitle("pretext tasks, same tower and tower passes: 95 % intervals", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def run_task_table(root: Path, tasks: Sequence[str]) -> tuple[list[TaskRow], list[Lead], dict[str, Path]]:
    """Read every task's reports under ``root``, write ``task_table.md``/``.csv``, ``task_chart.png`` and
    ``summary.json`` there."""
    rows = [read_task(root, t) for t in tasks]
    if not any(math.isfinite(r.pretext_accuracy) or r.probes for r in rows):
        raise UserError(f"{root}: no task has pretraining or probe reports; run scripts/task-study.sh first")
    found = leads(rows)
    root.mkdir(parents=True, exist_ok=True)
    files = {"table_md": root / "task_table.md", "table_csv": root / "task_table.csv",
             "summary": root / "summary.json"}
    files["table_md"].write_text(table_markdown(rows, found))
    header = ["task", "steps", "pretext_accuracy", "chance"] + [f"{s}{x}" for s, _ in PROBE_SCORES
                                                                 for x in ("", "_low", "_high")] \
        + ["detection_map", "detection_map_low", "detection_map_high", "detection_seeds"]
    csv = [",".join(header)]
    for r in rows:
        vals = [r.task, str(r.steps), f"{r.pretext_accuracy:.4f}", f"{r.chance:.4f}"]
        for s, _ in PROBE_SCORES:
            ci = r.probes.get(s)
            vals += [f"{x:.4f}" for x in ((ci.mean, ci.low, ci.high) if ci else (float("nan"),) * 3)]
        d = r.detection
        vals += [f"{x:.4f}" for x in ((d.mean, d.low, d.high) if d else (float("nan"),) * 3)] + [str(d.n if d else 0)]
        csv.append(",".join(vals))
    files["table_csv"].write_text("\n".join(csv) + "\n")
    files["chart"] = chart(rows, root / "task_chart.png")
    summary = {"tasks": {r.task: {"pretext_accuracy": r.pretext_accuracy, "chance": r.chance, "steps": r.steps,
                                  "tower_passes_per_second": r.tower_passes_per_second,
                                  **{s: ci.as_dict() for s, ci in r.probes.items()},
                                  "detection_map": r.detection.as_dict() if r.detection else None,
                                  "detection_per_seed": r.per_seed} for r in rows},
               "leads": [{"measure": lead.measure, "best": lead.best, "runner_up": lead.runner_up,
                          "difference": lead.difference.as_dict() if lead.difference else None,
                          "beyond_noise": bool(lead.difference and lead.difference.excludes_zero),
                          "sentence": lead.sentence()} for lead in found]}
    files["summary"].write_text(json.dumps(json_finite(summary), indent=2) + "\n")
    return rows, found, files
