#!/usr/bin/env bash
# Screenshots of the Dagster and MLflow UIs for the README (docs/img/ui_*.png),
# taken in headless Chromium (Debian's `chromium`; installed here if missing), driven by
# Playwright (scripts/screenshots.mjs; the npm library only, no browser download)
# after `make pipeline` has filled .dagster_home/ and mlruns.db.
# Usage: scripts/screenshots.sh   (servers on 127.0.0.1:3300 and :5300, stopped at the end)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
OUT=docs/img
command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
mkdir -p "$OUT"
export DAGSTER_HOME=$PWD/.dagster_home
env --default-signal=INT "$BIN/dagster" dev -m dagster_project.definitions -h 127.0.0.1 -p 3300 >/tmp/ctx-shots-dagster.log 2>&1 &
DAGSTER_PID=$!
"$BIN/mlflow" ui --backend-store-uri "sqlite:///$PWD/mlruns.db" --workers 1 -h 127.0.0.1 -p 5300 >/tmp/ctx-shots-mlflow.log 2>&1 &
MLFLOW_PID=$!
trap 'kill -TERM $DAGSTER_PID $MLFLOW_PID 2>/dev/null; wait $DAGSTER_PID $MLFLOW_PID 2>/dev/null || true' EXIT
for url in http://127.0.0.1:3300/server_info http://127.0.0.1:5300/health; do
  for _ in $(seq 120); do curl -sf "$url" >/dev/null && break; sleep 1; done
done
sleep 10  # the code location loads after the webserver answers
experiment=$("$BIN/python" - <<'PY'
import mlflow
exp = mlflow.MlflowClient("sqlite:///mlruns.db").get_experiment_by_name("ctx-pipeline")
print(exp.experiment_id if exp else 0)
PY
)
# Playwright's library only (it drives the Chromium above; it downloads no browser)
PW=${CTX_PLAYWRIGHT_DIR:-$HOME/.cache/ctx-pipeline/playwright}
mkdir -p "$PW"
[ -d "$PW/node_modules/playwright-core" ] || npm install --silent --prefix "$PW" playwright-core@1.64.1
PW_DIR="$PW/node_modules" node scripts/screenshots.mjs http://127.0.0.1:3300 http://127.0.0.1:5300 "$experiment" "$OUT"
