#!/usr/bin/env bash
# The detection study behind the README's headline table: every init of
# detection.inits x seeds 0, 1, 2 with the main job's budget, then the table
# with 95 % intervals over seeds and the paired differences, then the registry
# comparison. Writes reports/detection-study/ and models/detection-study/ (the
# main job's reports/detection/ stay as `dvc repro` made them).
#   scripts/detection-study.sh [extra --set key=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
SEEDS=${SEEDS:-"0 1 2"}
sets=(--set detection.reports=reports/detection-study --set detection.out=models/detection-study "$@")
inits=$("$BIN/python" -c "from ctx_core.config import load_params; print(' '.join(load_params('params.yaml').params.detection.inits))")
for init in $inits; do
  "$BIN/ctx" finetune --init "$init" --seeds $SEEDS "${sets[@]}"
done
"$BIN/ctx" detection_table "${sets[@]}"
"$BIN/ctx" compare --set compare.reports=reports/detection-study/compare "${sets[@]}" || echo "ctx compare failed (tracking off or registry empty)" >&2
