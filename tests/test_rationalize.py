"""STaR rationalization helpers (constellation/algorithms/rationalize.py)."""

from __future__ import annotations

import types

import pytest

from constellation.algorithms.rationalize import (
    HINT_SUFFIX, failed_problems, hint_function, hinted_problem, original_id, rationalized,
)
from constellation.algorithms.selection import Sample
from constellation.tasks import arithmetic, dsl as dsl_task, jsonl as jsonl_task
from constellation.tasks.arithmetic import make_problem


def scored(cid: str, visible: bool, correct: bool) -> Sample:
    return Sample(cid, visible, correct, None, None, "")


def test_failed_problems_are_those_without_a_passing_candidate():
    pools = {"B": [scored("b0", False, False), scored("b1", False, False)],
             "A": [scored("a0", True, True)], "C": [scored("c0", False, False)]}
    assert failed_problems(pools) == ["B", "C"]


def test_hinted_problem_keeps_verification_data_and_changes_only_id_and_prompt():
    p = make_problem("T0001", 12, "+", 34)
    h = hinted_problem(p, arithmetic.hint_prompt)
    assert h.id == "T0001" + HINT_SUFFIX and h.prompt == "Q: 12+34 (46)\n"
    assert (h.data, h.reference, h.task, h.difficulty) == (p.data, p.reference, p.task, p.difficulty)
    assert original_id(h.id) == "T0001"


def test_original_id_rejects_an_unhinted_id():
    with pytest.raises(ValueError, match="not a hinted problem id"):
        original_id("T0001")


def test_rationalized_keeps_only_rationales_that_reach_the_answer():
    pools = {"T1#hint": [scored("r/1/T1#hint/0", True, True)],
             "T2#hint": [scored("r/1/T2#hint/0", False, False)],
             "T3#hint": [scored("r/1/T3#hint/0", True, False)]}  # passes visibly, wrong on held-out
    assert rationalized(pools) == [("T1", "r/1/T1#hint/0")]


def test_hint_function_of_tasks_with_and_without_hints():
    hint, why = hint_function(arithmetic, [make_problem("T", 1, "+", 2)])
    assert hint is arithmetic.hint_prompt and why == ""
    hint, why = hint_function(dsl_task, [])
    assert hint is None and "has no hint_prompt" in why


def test_hint_function_refuses_a_task_that_cannot_hint_its_problems():
    code = jsonl_task.code_problem({"prompt": "def f():\n", "tests": ["assert f() is None"]}, "J1", "x:1")
    hint, why = hint_function(jsonl_task, [code])
    assert hint is None and "cannot give a hint for problem J1" in why


def test_hint_function_of_a_plugin_module_without_hints():
    module = types.ModuleType("myplugin.tasks")
    assert hint_function(module, [])[0] is None
