"""`import constellation` (and the supervisor) must work without torch."""

import subprocess
import sys


def test_core_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None; "
            "import launch.cli, constellation.runtime.coordinator, launch.monitor, launch.supervisor, "
            "verifiers.dsl, constellation.tasks.dsl, roles.verifier_dsl; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
