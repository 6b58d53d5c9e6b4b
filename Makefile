# The two commands:  make pipeline  (main job on the embedded data)  and  make test.
# Both create or reuse the virtual environment first.
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup pipeline test ui mlflow-ui bench

setup:
	@VENV=$(VENV) scripts/ensure-venv.sh

pipeline: setup
	dvc repro
	dvc metrics show

test: setup
	$(BIN)/python -m pytest

ui: setup
	$(BIN)/dagster dev -m dagster_project.definitions -h 127.0.0.1 -p 3000

mlflow-ui: setup
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns.db --workers 1 -h 127.0.0.1 -p 5000

bench: setup
	$(BIN)/python benchmarks/bench_synth.py
