#!/usr/bin/env bash
# The pretext-task comparison behind the README's task table: one encoder per
# task (context, rotation, jigsaw, instance), each with the same tower and the
# same tower passes per step (pretrain.tower_passes: 288 with the default
# params) for the same number of steps; each probed (ctx probe: VOC07 SVM, kNN,
# logistic, bootstrap intervals) and fine-tuned as the `context` init of a
# Faster R-CNN over seeds; then the table with paired differences
# (ctx task_table). Writes reports/tasks/<task>/ and models/tasks/<task>/; the
# main job's models/ and reports/ stay as `dvc repro` made them.
#   STEPS=600 SEEDS="0 1 2" TASKS="context rotation" scripts/task-study.sh [extra --set key=value ...]
# STEPS: pretraining steps per task (default: params pretrain.steps);
# SEEDS="" skips detection (probes only).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
TASKS=${TASKS:-"context rotation jigsaw instance"}
SEEDS=${SEEDS-"0 1 2"}
ROOT=${ROOT:-reports/tasks}
MODELS=${MODELS:-models/tasks}
for task in $TASKS; do
  pre=(--set "pretrain.task=$task" --set "pretrain.out=$MODELS/$task" --set "pretrain.reports=$ROOT/$task/pretrain")
  [ -n "${STEPS:-}" ] && pre+=(--set "pretrain.steps=$STEPS")
  echo "== $task: pretrain" >&2
  "$BIN/ctx" pretrain "${pre[@]}" "$@"
  echo "== $task: probe" >&2
  "$BIN/ctx" probe --set "probe.encoder=$MODELS/$task/encoder.pt" --set "probe.reports=$ROOT/$task/probe" "$@"
  if [ -n "$SEEDS" ]; then
    echo "== $task: detection, seeds $SEEDS" >&2
    "$BIN/ctx" finetune --init context --seeds $SEEDS --set "detection.encoder=$MODELS/$task/encoder.pt" \
      --set "detection.reports=$ROOT/$task/detection" --set "detection.out=$MODELS/$task/detection" "$@"
  fi
done
"$BIN/ctx" task_table --root "$ROOT" --tasks $TASKS "$@"
