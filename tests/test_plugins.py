"""Plugins: a throwaway distribution registers a verifier and a task through entry points.

The plugin's verifier is the example of docs/plugins.md, read from that page itself, so
the documented code is the tested code. The package is pip-installed into the
running venv and uninstalled afterwards.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from constellation.runtime.registry import RegistryError, plugin_group, resolve_role, resolve_task

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # pip install + uninstall take a few seconds

TASK_MODULE = '''
from typing import NamedTuple
from constellation.protocol.messages import Problem

class TaskSplit(NamedTuple):
    labeled: list
    train: list
    eval: list

def make_split(cfg, seed):
    ps = [Problem(id=f"X{i}", task="exact", prompt=f"{i}+{i}=", data={}, reference=str(2 * i)) for i in range(4)]
    return TaskSplit(ps[:2], ps[2:3], ps[3:])

def critic_text(problem, candidate_text, heldout_outputs):
    return problem.prompt + candidate_text
'''


def readme_plugin_example() -> tuple[str, str]:
    """(the verifier module, the pyproject entry-point table) shown in docs/plugins.md."""
    text = (ROOT / "docs" / "plugins.md").read_text()
    block = text.split("<!-- plugin-example:start -->")[1].split("<!-- plugin-example:end -->")[0]
    python = re.search(r"```python\n(.*?)```", block, re.S).group(1)
    toml = re.search(r"```toml\n(.*?)```", block, re.S).group(1)
    return python, toml


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    name = f"cstplugin{os.getpid()}"
    src = tmp_path_factory.mktemp("plugin")
    python, toml = readme_plugin_example()
    (src / name).mkdir()
    (src / name / "__init__.py").write_text("")
    (src / name / "verifiers.py").write_text(python)
    (src / name / "tasks.py").write_text(TASK_MODULE)
    (src / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{name}"
        version = "0.0.1"

        [tool.setuptools]
        packages = ["{name}"]

        """) + toml.replace("mypkg", name))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--no-deps", "--no-build-isolation", "--no-index", str(src)],
                   check=True, capture_output=True, timeout=300)
    try:
        yield name
    finally:
        subprocess.run([*pip, "uninstall", "-y", name], check=False, capture_output=True, timeout=120)


def run_python(code: str) -> subprocess.CompletedProcess:
    """A fresh interpreter (it sees the newly installed distribution's metadata)."""
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_plugin_verifier_and_task_resolve_and_verify(installed_plugin):
    out = run_python(textwrap.dedent("""
        from constellation.protocol.config import Config
        from constellation.protocol.messages import Candidate, VerifyRequest
        from constellation.runtime.registry import resolve_role, resolve_task
        split = resolve_task("exact").make_split(None, 0)
        cls = resolve_role("verifier", "exact")
        role = cls(Config(), ".")
        role.setup()
        p = split.eval[0]
        cands = [Candidate(id=f"c/{i}", problem_id=p.id, text=t, logprob=0.0, adapter_version=0)
                 for i, t in enumerate(["work\\n" + p.reference, "7", ""])]
        print(cls.__module__, [v.status for v in role.handle(VerifyRequest(request_id="r", problem=p, candidates=cands)).items])
    """))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [f"{installed_plugin}.verifiers", "['pass',", "'fail',", "'fail']"]


def test_roles_command_lists_plugins_with_their_source(installed_plugin):
    out = subprocess.run([sys.executable, "-m", "launch.cli", "roles"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "COLUMNS": "250"})
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if re.search(r"│ exact +│", line)]
    assert len(rows) == 2  # the verifier and the task
    assert all(f"plugin {installed_plugin} 0.0.1" in row for row in rows)


def test_unknown_name_mentions_the_entry_point_group():
    with pytest.raises(RegistryError, match="constellation.verifiers"):
        resolve_role("verifier", "no-such-verifier")
    with pytest.raises(RegistryError, match="constellation.tasks"):
        resolve_task("no-such-task")
    assert plugin_group("task") == "constellation.tasks"
