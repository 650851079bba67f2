"""Everything below the models layer (and the apps that run without a model) imports without torch."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# every module of these packages (ARCHITECTURE.md: layers 1-4)
TORCH_FREE_PACKAGES = ("constellation.protocol", "constellation.algorithms", "verifiers", "constellation.tasks",
                       "constellation.runtime")
# apps and roles that start or watch a run without loading a model
TORCH_FREE_MODULES = ("launch.cli", "launch.supervisor", "launch.up", "launch.monitor", "launch.memory_plan",
                      "roles.verifier_dsl", "roles.verifier_arithmetic")
SKIP = {"verifiers.code_harness"}  # a script run in the sandbox child, not a module to import


def modules_of(package: str) -> list[str]:
    """Dotted names of the package's modules, found on disk (nothing is imported here)."""
    names = []
    for path in sorted(ROOT.joinpath(*package.split(".")).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return [n for n in names if n not in SKIP]


def import_without_torch(modules: list[str]) -> subprocess.CompletedProcess:
    code = ("import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
            f"import importlib\nfor name in {modules!r}: importlib.import_module(name)\nprint('ok')")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)


def test_lower_layers_import_without_torch():
    modules = [m for p in TORCH_FREE_PACKAGES for m in modules_of(p)]
    assert "constellation.runtime.coordinator" in modules and "verifiers.math.checker" in modules, modules
    out = import_without_torch(modules)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_supervisor_cli_and_monitor_import_without_torch():
    out = import_without_torch(list(TORCH_FREE_MODULES))
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
