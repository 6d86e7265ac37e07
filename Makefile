# Two commands set everything up on a fresh machine:
#   make demo   -> installs into .venv and runs the demo on an embedded broker + local Ray
#   make test   -> installs into .venv (with test extras and the LLM runtime) and runs the whole test suite
#   make demo-llm -> installs the LLM runtime and streams MMLU through three local LLMs
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=
# llama-cpp-python compiles from source; only the library is needed, not llama.cpp's tools.
# A portable AVX2 build, not -march=native: on a Xeon with AMX the native build's AMX kernels
# segfaulted in every multi-token decode (llama-cpp-python 0.3.36 on this sandbox's CPUs).
export CMAKE_ARGS ?= -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_CURL=OFF \
	-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON

.PHONY: demo demo-llm test lint bench bench-budget bench-llm clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-%: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[$*]"
	touch $@

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

demo: $(VENV)/.installed
	$(BIN)/tierflow demo $(ARGS)

demo-llm: $(VENV)/.installed-llm
	$(BIN)/tierflow demo --portfolio mmlu-llm $(ARGS)

test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/mypy .
	$(BIN)/python -m pytest $(ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/mypy .

bench: $(VENV)/.installed-test
	$(BIN)/python load_tests/pipeline_throughput.py --json pipeline_throughput.json

bench-budget: $(VENV)/.installed-test
	$(BIN)/python load_tests/budget_tracking.py --json budget_tracking.json --plot budget_tracking.png

bench-llm: $(VENV)/.installed-test
	$(BIN)/python load_tests/llm_tiers.py --json llm_tiers.json

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
