"""``ctx task_table``: the pretext tasks side by side from the task study's reports; paired
differences against plain computations."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from ctx_core.compare.tasks import TASKS, leads, paired_resamples, read_task, run_task_table
from tests.conftest import BIN, ROOT, write_params

IMAGES = np.array([f"{k:06d}.jpg" for k in range(30)])


def write_task(root, task, acc, chance, svm, seeds, shift=0.0):
    """Reports as scripts/task-study.sh leaves them: ``svm``: (1 + B,) SVM mAP values."""
    (root / task / "pretrain").mkdir(parents=True)
    (root / task / "pretrain" / "metrics.json").write_text(json.dumps(
        {"held_out_accuracy": acc, "chance_accuracy": chance, "steps": 50, "tower_passes_per_second": 900.0}))
    probe = root / task / "probe"
    probe.mkdir(parents=True)
    low, high = np.percentile(svm[1:], [2.5, 97.5])
    metrics = {"test_images": len(IMAGES), "svm_map_learned": svm[0], "svm_map_learned_low": low,
               "svm_map_learned_high": high, "knn_top1_learned": 0.5 + shift, "logreg_top1_learned": 0.6 + shift}
    (probe / "metrics.json").write_text(json.dumps(metrics))
    with open(probe / "per_resample.npz", "wb") as f:
        np.savez_compressed(f, test_images=IMAGES, svm_map__learned=svm, knn_top1__learned=np.full(len(svm), 0.5 + shift),
                            logreg_top1__learned=np.full(len(svm), 0.6 + shift))
    if seeds:
        det = root / task / "detection" / "inits" / "context"
        det.mkdir(parents=True)
        (det / "metrics.json").write_text(json.dumps({"per_seed": {str(k): v for k, v in enumerate(seeds)}}))


def test_paired_differences_against_plain_computations(tmp_path):
    rng = np.random.default_rng(0)
    common = rng.normal(0.5, 0.05, 201)  # resample-to-resample noise both encoders share
    a, b = common + 0.03 + rng.normal(0, 0.003, 201), common + rng.normal(0, 0.003, 201)
    write_task(tmp_path, "context", 0.6, 0.15, a, [0.20, 0.25, 0.22])
    write_task(tmp_path, "rotation", 0.7, 0.25, b, [0.18, 0.20, 0.21], shift=0.01)
    ctx, rot = read_task(tmp_path, "context"), read_task(tmp_path, "rotation")
    d = paired_resamples(ctx, rot, "svm_map")
    plain = a - b
    assert d.mean == pytest.approx(plain[0])
    assert (d.low, d.high) == pytest.approx(tuple(np.percentile(plain[1:], [2.5, 97.5])))
    assert d.excludes_zero  # paired: the shared noise cancels, though the two intervals overlap
    assert ctx.probes["svm_map"].overlaps(rot.probes["svm_map"])
    found = {lead.measure: lead for lead in leads([ctx, rot])}
    assert found["VOC07 SVM mAP"].best == "context" and "beyond noise" in found["VOC07 SVM mAP"].sentence()
    det = found["detection test mAP"]
    diffs = [0.20 - 0.18, 0.25 - 0.20, 0.22 - 0.21]
    assert det.difference.mean == pytest.approx(np.mean(diffs))
    from scipy import stats
    half = stats.t.ppf(0.975, 2) * np.std(diffs, ddof=1) / np.sqrt(3)
    assert det.difference.low == pytest.approx(np.mean(diffs) - half)
    # other test images: not paired
    rot.test_images = tuple(IMAGES[::-1])
    assert paired_resamples(ctx, rot, "svm_map") is None


def test_the_table_command_writes_the_table_chart_and_summary(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "reports" / "tasks"
    write_task(root, "context", 0.6, 0.15, rng.normal(0.5, 0.02, 101), [0.2, 0.3])
    write_task(root, "jigsaw", 0.3, 0.01, rng.normal(0.5, 0.02, 101), [])  # probes only
    params = write_params(tmp_path)
    out = subprocess.run([str(BIN / "ctx"), "task_table", "--params", str(params),
                          "--root", str(root), "--tasks", "context", "jigsaw", "rotation"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "| context | 50 | 0.600 (0.150) |" in out.stdout and "| rotation | 0 | not run |" in out.stdout
    assert "within noise: no ranking claimed" in out.stdout  # same-distribution scores
    summary = json.loads((root / "summary.json").read_text())
    assert summary["tasks"]["jigsaw"]["detection_map"] is None
    assert summary["tasks"]["context"]["detection_map"]["n"] == 2
    assert (root / "task_chart.png").stat().st_size > 1000 and (root / "task_table.csv").read_text().count("\n") == 4
    bad = subprocess.run([str(BIN / "ctx"), "task_table", "--params", str(params),
                          "--root", str(root), "--tasks", "colour"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode != 0 and "the tasks are context, rotation, jigsaw, instance" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_tasks_are_the_config_literal():
    assert TASKS == ("context", "rotation", "jigsaw", "instance")
    with pytest.raises(Exception, match="no task has pretraining or probe reports"):
        run_task_table(ROOT / "nonexistent-task-study", ["context"])
