# meshserve: `make up` runs it, `make test` tests it. Both build .venv first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# llama-cpp-python builds from source (about 5 minutes); its wheel is kept outside the clone
# so that a fresh clone on the same machine installs it in seconds.
WHEEL_CACHE ?= $(HOME)/.cache/meshserve/wheels
LLAMA_CPP_VERSION := 0.3.36
PYTEST_ARGS ?=

.PHONY: up test lint bench stubs proto-check unit integration clean-venv

up: $(STAMP)
	$(BIN)/meshserve up

test: $(STAMP) proto-check lint
	$(BIN)/pytest $(PYTEST_ARGS)

# ruff: lint and formatting, for the hand-written code (generated stubs excluded in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

unit: $(STAMP)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: $(STAMP)
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

# The benchmark (bench/): every system side by side, interleaved. BENCH_ARGS=--quick finishes in under 3 minutes.
BENCH_ARGS ?=
bench: $(STAMP) $(VENV)/.bench-installed
	$(BIN)/python -m bench $(BENCH_ARGS)

$(VENV)/.bench-installed: $(STAMP)
	$(BIN)/pip install --quiet --find-links $(WHEEL_CACHE) -c requirements.lock -e '.[dev,bench]'
	touch $@

# Regenerates the committed Python stubs from protos/. tests/unit/test_stubs_fresh.py fails when they are stale.
stubs: $(STAMP)
	$(BIN)/python protos/generate_stubs.py

# buf lint, and buf breaking against the main branch: both offline (googleapis is a local module).
proto-check: $(STAMP)
	$(BIN)/buf lint
	@if git rev-parse --verify -q main >/dev/null && git cat-file -e main:buf.yaml 2>/dev/null; then \
		echo "buf breaking --against .git#branch=main"; \
		$(BIN)/buf breaking --against '.git#branch=main'; \
	else \
		echo "buf breaking: no main branch with protos to compare against yet"; \
	fi

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet pip==26.3
	mkdir -p $(WHEEL_CACHE)
	ls $(WHEEL_CACHE)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || \
		CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/pip wheel --no-deps -w $(WHEEL_CACHE) llama-cpp-python==$(LLAMA_CPP_VERSION)
	$(BIN)/pip install --quiet --find-links $(WHEEL_CACHE) -c requirements.lock -e '.[dev]'
	touch $@

clean-venv:
	rm -rf $(VENV)
