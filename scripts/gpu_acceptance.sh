#!/usr/bin/env bash
# GPU acceptance run (docs/gpu.md): one short round with vLLM + NF4 trainer +
# policy_head critic on one CUDA card; checks the adapter version after the
# swap, peak memory per role against the memory plan, prints tokens/s and
# swap latency. Exit 0 = passed, 1 = failed, 3 = DID NOT RUN (no CUDA device).
# Not part of CI.   Usage: scripts/gpu_acceptance.sh [--model FOLDER_OR_HUB_ID]
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
exec "$PYTHON" bench/gpu_acceptance.py "$@"
