# cascadelab: the README's commands. `make repro` and `make test` set up .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(abspath $(VENV)/bin)
STAMP := $(VENV)/.installed
export PATH := $(BIN):$(PATH)

.PHONY: setup repro test test-fast lint ui plots bench proof clean-store

$(STAMP): requirements.txt requirements-dev.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -c constraints.txt
	touch $(STAMP)

setup: $(STAMP)  ## create .venv from the pinned files

repro: setup  ## run the DVC pipeline (dvc repro)
	dvc repro

test: setup  ## run the whole test suite (unit, integration, end-to-end)
	python -m pytest

test-fast: setup  ## unit and integration tests only
	python -m pytest -m "not slow"

lint: setup  ## ruff (check + format) + mypy
	ruff check src stages tests benchmarks
	ruff format --check src stages tests benchmarks
	mypy

plots: setup  ## every DVC plot as a PNG under plots/rendered/ (+ index.html), rendered offline
	PYTHONPATH=src python -m cascadelab.report.offline_plots --out plots/rendered

ui: setup  ## MLflow UI on the project's store (http://127.0.0.1:5000)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --backend-store-uri sqlite:///$(abspath mlflow.db) --port 5000

proof: setup  ## run the SIGMA `full` profile 48 steps; fail naming any feature whose counter contradicts it
	PYTHONPATH=src python -m cascadelab.pipeline.sigma_proof

bench: setup  ## speed benchmarks (print ratios)
	PYTHONPATH=src python benchmarks/bench_coarse_mfu.py
