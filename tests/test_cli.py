"""The ``constellation`` command: help, exit codes, one-line errors, completion.

Everything here runs ``launch.cli.main`` in-process except one check of the
``python -m launch.cli`` entry; none of it starts a role or loads a model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer

from constellation.runtime.registry import KINDS, entries
from launch import cli

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ["up", "monitor", "roles", "config", "table", "export", "study", "control", "probe", "verify"]


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich tables and help panels do not wrap or cut cells


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_commands_are_the_documented_ones():
    assert sorted(typer.main.get_command(cli.app).commands) == sorted(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command_renders(capsys, command):
    code, out, err = run(capsys, command, "--help")
    assert code == 0, err
    assert f"constellation {command}" in out and "--help" in out


def test_top_level_help_lists_every_command_and_completion(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert all(command in out for command in COMMANDS)
    assert "--install-completion" in out and "--show-completion" in out


def test_no_command_prints_help_and_exits_2(capsys):
    code, out, _ = run(capsys)
    assert code == 2 and "Commands" in out


@pytest.mark.parametrize("argv", [
    ["config", "--set", "nope.key=1"],                 # unknown section
    ["config", "--set", "run.rounds"],                 # no '='
    ["config", "--set", "run.rounds=1", "--set", 'run.rounds="three"'],  # wrong type, second --set
])
def test_bad_set_is_exit_2_with_one_error_line(capsys, argv):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err


def test_bad_set_on_up_stops_before_anything_starts(capsys, tmp_path):
    code, out, err = run(capsys, "up", "--set", f'run.runs_dir="{tmp_path}"', "--set", "run.nope=1")
    lines = (out + err).splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "nope" in lines[0]
    assert list(tmp_path.iterdir()) == []  # no run directory made


@pytest.mark.parametrize("command", ["up", "config", "probe", "study", "control"])
def test_unknown_preset_is_exit_2_and_names_the_known_ones(capsys, command):
    code, out, err = run(capsys, command, "--preset", "no-such-preset")
    lines = (out + err).splitlines()
    assert code == 2 and len(lines) == 1 and "known presets" in lines[0] and "tiny" in lines[0]


@pytest.mark.parametrize("argv", [
    ["up", "--no-such-option"],
    ["no-such-command"],
    ["probe", "--problems", "many"],
    ["verify", "--verifier", "nope", "answers.jsonl"],
    ["monitor"],                                       # missing RUN_DIR
])
def test_usage_errors_are_exit_2_with_one_error_line(capsys, argv):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "--help" in err, err


def test_missing_run_directories_are_exit_2(capsys, tmp_path):
    for command in ("monitor", "table"):
        code, _, err = run(capsys, command, str(tmp_path / "missing"))
        assert code == 2 and err.startswith("error: ") and "missing" in err


def test_verify_of_a_missing_file_is_exit_2(capsys, tmp_path):
    code, _, err = run(capsys, "verify", str(tmp_path / "missing.jsonl"))
    assert code == 2 and err.startswith("error: cannot read")


def test_config_prints_the_resolved_config_with_overrides(capsys):
    code, out, _ = run(capsys, "config", "--preset", "smoke", "--set", "run.rounds=5")
    assert code == 0 and "[run]" in out and "rounds = 5" in out


def test_config_reference_markdown_matches_the_docs(capsys):
    code, out, _ = run(capsys, "config", "--reference", "--markdown")
    text = (ROOT / "docs" / "configuration.md").read_text()
    start, end = "<!-- config-reference:start -->\n", "<!-- config-reference:end -->"
    assert code == 0
    assert out.strip() == text[text.index(start) + len(start):text.index(end)].strip(), \
        "run: python -m launch.cli config --reference --markdown, and paste it into docs/configuration.md"


def test_roles_lists_every_builtin_implementation(capsys):
    code, out, _ = run(capsys, "roles")
    assert code == 0
    builtin = {(kind, name) for kind in KINDS for name, entry in entries(kind).items() if entry.builtin}
    assert {("generator", "hf"), ("verifier", "dsl"), ("critic", "small"), ("trainer", "star")} <= builtin
    rows = [[cell.strip() for cell in line.split("│")[1:3]] for line in out.splitlines() if line.startswith("│")]
    kind = ""
    listed = set()
    for role, impl in rows:  # the role cell is blank on a row that continues the previous role
        kind = role or kind
        if impl:
            listed.add((kind, impl))
    assert builtin <= listed, builtin - listed


def test_show_completion_prints_a_bash_script(capsys):
    code, out, _ = run(capsys, "--show-completion", "bash")
    assert code == 0 and "_CONSTELLATION_COMPLETE=complete_bash" in out


def test_completion_offers_presets_and_config_keys():
    assert cli._complete_preset("sm") == ["smoke", "smollm2"]
    assert cli._complete_override("generator.im") == ["generator.impl="]
    assert cli._complete_override("run.rounds=") == []


def test_python_dash_m_entry_runs_and_exits_with_the_code():
    proc = subprocess.run([sys.executable, "-m", "launch.cli", "config", "--preset", "no-such-preset"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
