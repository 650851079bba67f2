"""Bad config values and mismatched fields fail in ``constellation up`` before any work.

Each case runs the real command line in-process (``launch.cli.main``) with a
``runs_dir`` in the test's temp folder: the run must exit 2 with one error
line that names the field and what is allowed, and must not have created a
run directory (nothing was prepared, no base model was built)."""

from __future__ import annotations

import json

import pytest

from constellation.protocol import config
from constellation.runtime import config_check
from launch import cli

BAD_UP = [
    # (override(s), the field the error must name)
    (["coordinator.k=0"], "coordinator.k"),
    (["coordinator.k=-3"], "coordinator.k"),
    (["run.rounds=-1"], "run.rounds"),
    (["coordinator.window=0"], "coordinator.window"),
    (["eval.n_samples=1000000000"], "eval.n_samples"),
    (["coordinator.request_problems=0"], "coordinator.request_problems"),
    (["trainer.max_seconds=0.001"], "trainer.max_seconds"),
    (["sampling.temperature=0"], "sampling.temperature"),
    (['trainer.mode="sometimes"'], "trainer.mode"),
    (['trainer.loss_type="hinge"'], "trainer.loss_type"),
    (['model.quantization="int3"'], "model.quantization"),
    (['coordinator.selection="best"'], "coordinator.selection"),
    (["eval.ks=[1, 0]"], "eval.ks"),
    (['verifier.impl="arithmetic"'], "verifier.impl"),  # the dsl task's problems need the dsl verifier
    (['task.impl="arithmetic"'], "verifier.impl"),
    (['coordinator.selection="critic"', 'critic.impl="none"'], "coordinator.selection"),
    (['generator.impl="hff"'], "generator.impl"),
    (["eval.ks=[1, 128]"], "eval.ks"),
    (["guard.val_problems=5000"], "guard.val_problems"),
]


@pytest.mark.parametrize("overrides, field", BAD_UP, ids=[" ".join(o) for o, _ in BAD_UP])
def test_up_refuses_a_bad_config_before_any_work(tmp_path, capsys, overrides, field):
    runs = tmp_path / "runs"
    argv = ["up", "--set", f'run.runs_dir="{runs}"']
    for item in overrides:
        argv += ["--set", item]
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert code == 2, out + err
    text = out + err  # `up` prints on its console (stdout)
    assert text.startswith("error:") and field in text and "allowed" in text, text
    assert not runs.exists(), "a run directory was made before the config was checked"


def test_config_command_lists_every_mismatch(capsys):
    code = cli.main(["config", "--set", "eval.ks=[1, 128]", "--set", "eval.zpd_low=0.9", "--set", "eval.zpd_high=0.1",
                     "--set", 'verifier.impl="arithmetic"'])
    _, err = capsys.readouterr()
    assert code == 2
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 3, err


def test_a_consistent_config_has_no_problems():
    for preset in config.preset_names():
        assert config_check.problems(config.load(preset)) == [], preset


def test_a_jsonl_task_is_matched_by_its_file_kind(tmp_path):
    path = tmp_path / "math.jsonl"
    path.write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n")
    base = ["task.impl=\"jsonl\"", f'task.path="{path}"']
    assert config_check.problems(config.load("tiny", [*base, 'verifier.impl="math"'])) == []
    found = config_check.problems(config.load("tiny", [*base, 'verifier.impl="code"']))
    assert len(found) == 1 and "verifier.impl" in found[0]


def test_a_choice_error_lists_the_choices():
    with pytest.raises(config.ConfigError) as e:
        config.load("tiny", ['pairs.source="oracle"'])
    assert all(choice in str(e.value) for choice in ('"verifier"', '"critic"', '"self_judge"'))


def test_a_bound_error_names_the_value_and_the_bound():
    with pytest.raises(config.ConfigError) as e:
        config.load("tiny", ["coordinator.window=0"])
    assert "coordinator.window = 0" in str(e.value) and ">= 1" in str(e.value)


def test_every_rule_names_fields_that_exist():
    keys = {key for key, _, _ in config.describe()}
    for rule in config_check.RULES:
        assert set(rule.fields) <= keys, rule.fields
