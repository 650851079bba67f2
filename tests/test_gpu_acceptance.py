"""scripts/gpu_acceptance.sh never claims success without a GPU: it exits 3 and says it did not run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_without_cuda_the_acceptance_script_says_it_did_not_run():
    from launch.memory_plan import probe_gpu

    if probe_gpu()["cuda"]:
        pytest.skip("a CUDA device is present: the script would really run")
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_acceptance.sh")], capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable,
                                            "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "DID NOT RUN" in proc.stdout and "PASSED" not in proc.stdout
