#!/usr/bin/env bash
# Create or reuse the virtual environment and install requirements.lock only
# when it (or pyproject.toml) changed since the last install. Idempotent.
#   VENV=path   where the environment lives (default: .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

pick_python() {
  for py in "${PYTHON:-}" python3.11 python3; do
    [ -n "$py" ] || continue
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      echo "$py"; return 0
    fi
  done
  echo "ensure-venv: Python 3.11 is required (torch 2.14.1 wheels are cp311); set PYTHON=/path/to/python3.11" >&2
  return 1
}

want=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
stamp="$VENV/.ctx-lock-sha256"
if [ ! -x "$VENV/bin/python" ]; then
  echo "ensure-venv: creating $VENV"
  "$(pick_python)" -m venv "$VENV"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "ensure-venv: installing requirements.lock into $VENV (a few minutes the first time)"
  rm -f "$stamp"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip==25.3
  "$VENV/bin/python" -m pip install --quiet -r requirements.lock
fi
# The project itself, editable, pointing at this checkout (a cached venv may
# have been made for another clone).
here=$(pwd -P)
if [ ! -x "$VENV/bin/ctx" ] || ! "$VENV/bin/python" -I - "$here" <<'PY' 2>/dev/null
import os, sys, ctx_core  # -I: the current folder is not on sys.path
sys.exit(0 if os.path.realpath(ctx_core.__file__).startswith(os.path.join(sys.argv[1], "ctx_core")) else 1)
PY
then
  "$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e .
fi
echo "$want" > "$stamp"
