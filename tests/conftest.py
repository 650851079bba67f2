import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory):
    """One base-model cache for every end-to-end test of the session: the
    smoke base is built once and reused."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    """Creates .venv-vllm, the vLLM generator's own venv (idempotent; ~2 min the first time, measured)."""
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "make_vllm_venv.sh")], capture_output=True, text=True,
                          timeout=1800)
    if proc.returncode != 0:
        pytest.fail(f"scripts/make_vllm_venv.sh failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return VLLM_PYTHON
