"""The JSONL task loader: math (GSM8K, MATH, plain) and code lines, bad lines, splits, real GSM8K data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from constellation.protocol.config import TaskConfig
from constellation.runtime.registry import resolve_task
from constellation.tasks.jsonl import JsonlTaskError, hint_prompt, last_boxed, load, make_split, split_math_answer

ROOT = Path(__file__).resolve().parent.parent
GSM8K = Path("/work/shared/data/gsm8k")


def write(tmp_path: Path, *lines) -> Path:
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_gsm8k_answer_gives_gold_and_rationale_without_calculator_notes():
    gold, rationale, written = split_math_answer("He buys 2 * 3 = <<2*3=6>>6 pens.\n#### 1,006")
    assert gold == "1006" and rationale == "He buys 2 * 3 = 6 pens." and written is None


def test_boxed_extraction_balances_nested_braces():
    assert last_boxed(r"so $\boxed{\frac{1}{2}}$ and then \boxed{\sqrt{\frac{3}{4}}}.") == r"\sqrt{\frac{3}{4}}"
    assert last_boxed(r"\boxed{\{1, 2\}}") == r"\{1, 2\}"
    assert last_boxed("no box here") is None
    with pytest.raises(ValueError, match="never closed"):
        last_boxed(r"\boxed{\frac{1}{2}")


def test_math_solution_of_a_boxed_answer_is_the_solution_as_written():
    gold, rationale, written = split_math_answer(r"Add them: $\boxed{7}$.")
    assert gold == "7" and written == r"Add them: $\boxed{7}$."


def test_example_math_file_loads_every_form():
    problems = load(ROOT / "examples" / "math.jsonl")
    assert len(problems) == 12 and {p.task for p in problems} == {"math"}
    golds = [p.reference for p in problems]
    assert golds[:4] == ["75", "110", "105", "5000"] and r"\frac{3}{4}" in golds and "36" in golds
    assert problems[0].prompt.startswith("Q: A baker") and problems[0].data["solution"].endswith("The answer is 75.")
    assert "solution" not in problems[-1].data  # a plain answer has no rationale


def test_example_code_file_loads_and_prepends_code_prompts():
    problems = load(ROOT / "examples" / "code.jsonl")
    assert {p.task for p in problems} == {"code"}
    assert problems[0].data == {"tests": ["assert double(2) == 4", "assert double(-3) == -6"],
                                "entry_point": "double", "prepend_prompt": True}
    assert problems[-1].data["prepend_prompt"] is False  # a task statement: the completion is the program


@pytest.mark.skipif(not (GSM8K / "test.jsonl").exists(), reason="GSM8K data not present")
def test_real_gsm8k_test_split_loads_with_numeric_golds():
    problems = load(GSM8K / "test.jsonl")
    assert len(problems) == 1319
    assert all(re.fullmatch(r"-?\d+(\.\d+)?", p.reference) for p in problems), \
        [p.reference for p in problems if not re.fullmatch(r"-?\d+(\.\d+)?", p.reference)][:5]
    assert all("<<" not in p.data["solution"] and p.data["solution"].endswith(f"The answer is {p.reference}.")
               for p in problems)
    # the golds agree with the final "A: <answer>" lines of the labeled model-solutions file
    truths = [json.loads(line)["ground_truth"].rsplit("A:", 1)[1].strip().replace(",", "")
              for line in (GSM8K / "example_model_solutions.jsonl").read_text().splitlines()]
    assert [p.reference for p in problems] == truths


@pytest.mark.parametrize("line, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ({"q": "x"}, "neither a math line"),
    ({"question": "What?"}, "missing field 'answer'"),
    ({"question": "What?", "answer": "  "}, "field 'answer' is empty"),
    ({"question": "What?", "answer": True}, "field 'answer' must be"),
    ({"question": "What?", "answer": "#### "}, "holds no final answer"),
    ({"question": "What?", "answer": r"\boxed{1"}, "never closed"),
    ({"prompt": "def f(x):\n", "tests": []}, "field 'tests' must be a non-empty list"),
    ({"prompt": "def f(x):\n", "tests": ["assert f(1)"], "entry_point": "f x"}, "Python identifier"),
])
def test_bad_line_names_file_line_and_field(tmp_path, line, message):
    path = write(tmp_path, {"question": "1+1?", "answer": "2"} if "tests" not in str(line) else
                 {"prompt": "def g():\n", "tests": ["assert g() is None"]}, line)
    with pytest.raises(JsonlTaskError, match=re.escape(f"{path}:2")) as e:
        load(path)
    assert message in str(e.value)


def test_mixed_kinds_are_rejected(tmp_path):
    path = write(tmp_path, {"question": "1+1?", "answer": "2"}, {"prompt": "p", "tests": ["assert 1"]})
    with pytest.raises(JsonlTaskError, match="a code line in a file of math lines"):
        load(path)


def test_missing_file_and_missing_path_are_clear_errors(tmp_path):
    with pytest.raises(JsonlTaskError, match="no such file"):
        load(tmp_path / "nope.jsonl")
    with pytest.raises(JsonlTaskError, match="needs task.path"):
        make_split(TaskConfig(impl="jsonl"), 0)


def test_split_cuts_eval_then_train_then_labeled(tmp_path):
    path = write(tmp_path, *[{"question": f"{i}+1?", "answer": str(i + 1)} for i in range(10)])
    cfg = TaskConfig(impl="jsonl", path=str(path), n_eval=3, n_train=4, n_labeled=100)
    split = make_split(cfg, 0)
    assert (len(split.eval), len(split.train), len(split.labeled)) == (3, 4, 3)
    assert len({p.id for p in split.eval + split.train + split.labeled}) == 10
    assert make_split(cfg, 0) == split and make_split(cfg, 1) != split


def test_hint_prompt_gives_the_math_answer_and_refuses_code():
    math = load(ROOT / "examples" / "math.jsonl")[0]
    assert hint_prompt(math) == math.prompt.rstrip() + " (answer: 75)\n"
    with pytest.raises(ValueError, match="no answer"):
        hint_prompt(load(ROOT / "examples" / "code.jsonl")[0])


def test_registry_resolves_the_builtin_tasks():
    for name in ("jsonl", "arithmetic", "dsl"):
        assert callable(resolve_task(name).make_split)


def test_example_code_solutions_pass_their_tests_and_empty_completions_fail():
    from roles.verifier_code import program_text
    from verifiers.code import Limits, run_tests

    for p in load(ROOT / "examples" / "code.jsonl"):
        ok = run_tests(program_text(p, p.reference), p.data["tests"], Limits(), p.data["entry_point"])
        assert ok.status == "pass", (p.prompt, ok)
    bad = run_tests(program_text(p, "    pass\n"), p.data["tests"], Limits(), p.data["entry_point"])
    assert bad.status == "fail"
