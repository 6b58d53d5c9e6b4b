# The two commands:  make pipeline  (main job on the embedded data)  and  make test.
# Both create or reuse the virtual environment first.
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup pipeline test ui mlflow-ui bench detection-study task-study

setup:
	@VENV=$(VENV) scripts/ensure-venv.sh

# Materialises in Dagster what `dvc status` says is stale (everything on a fresh
# clone), records each stage in dvc.lock, prints the registry comparison.
pipeline: setup
	$(BIN)/python -m dagster_project.pipeline

# The >= 3-seed detection study behind the README's headline table (~1 h on 2 cores).
detection-study: setup
	BIN=$(BIN) scripts/detection-study.sh

task-study: setup
	BIN=$(BIN) scripts/task-study.sh

test: setup
	$(BIN)/python -m pytest

ui: setup
	DAGSTER_HOME=$(CURDIR)/.dagster_home $(BIN)/dagster dev -m dagster_project.definitions -h 127.0.0.1 -p 3000

mlflow-ui: setup
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns.db --workers 1 -h 127.0.0.1 -p 5000

bench: setup
	$(BIN)/python benchmarks/bench_synth.py
