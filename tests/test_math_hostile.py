"""The math verifier on the answer classes of issue 11 and on a hostile file.

bench/data/math_classes.jsonl holds this project's own hand-labelled cases
for each class (matrix orientation and long matrices, lists of choices,
unbalanced brackets, sets of answers, the forms once unsupported);
bench/data/math_hostile.jsonl is a file of hostile lines (deep nesting,
10**10**10 and towers, 50,000-digit numbers, 200 KB strings, binary bytes,
lone surrogates, nested LaTeX, invalid JSON).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launch import verify
from verifiers.math.equivalence import judge
from verifiers.math.extract import extract_answer
from verifiers.math.forms import answer_forms, unbalanced

DATA = Path(__file__).resolve().parent.parent / "bench" / "data"
CLASSES = [json.loads(line) for line in (DATA / "math_classes.jsonl").open(encoding="utf-8")]


@pytest.mark.parametrize("case", CLASSES, ids=[f"{c['id']}-{c['category']}" for c in CLASSES])
def test_class_cases_agree_with_their_labels(case):
    assert judge(case["gold"], case["pred"])["equal"] == case["equal"]


def test_every_class_has_equal_and_unequal_cases():
    for category in {c["category"] for c in CLASSES}:
        labels = {c["equal"] for c in CLASSES if c["category"] == category}
        assert labels == {True, False}, category


def test_a_long_matrix_is_not_read_as_its_last_number():
    ones = "\\begin{pmatrix}" + " & ".join(["1"] * 100) + "\\end{pmatrix}"
    assert extract_answer(ones) == ones
    assert judge("1", ones)["equal"] is False
    assert extract_answer("We add them up. " * 30 + "That makes 42 apples.") == "42"  # prose keeps the rule


def test_forms_split_sets_of_answers():
    assert answer_forms("x = 1 or x = 2") == ["x = 1", "x = 2"]
    assert [" ".join(f.split()) for f in answer_forms("1 \\pm 2")] == ["1 + 2", "1 - 2"]
    assert len(answer_forms("\\pm 1 \\pm 2")) == 4
    assert answer_forms("\\pm" * 10 + "1") == ["\\pm" * 10 + "1"]  # too many signs: left alone
    assert answer_forms("f(x) = 2x") == ["2x"] and answer_forms("(a, b) = (1, 2)") == ["(1, 2)"]


def test_unbalanced_ignores_open_and_closed_interval_ends():
    assert unbalanced("[0, 1)") is None and unbalanced("\\left(0, 1\\right]") is None
    assert unbalanced("3\\left(\\left(") is not None and unbalanced("2)") is not None
    assert unbalanced("\\{1, 2\\}") is None and unbalanced("\\frac{1}{2") is not None


def test_verify_survives_every_line_of_a_hostile_file(capsys):
    path = DATA / "math_hostile.jsonl"
    with path.open(encoding="utf-8", errors="replace") as f:  # lines as `verify` reads them
        records = [line for line in f if line.strip()]
    assert verify.run(str(path), jobs=1, timeout=1.0) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == len(records)
    kinds = {"correct", "incorrect", "no_answer", "parse_error", "timeout"}
    assert all(row["verdict"] in kinds for row in rows)
    # the checker's deadline is 1 s; a case past it is a "timeout" verdict, decided all the same
    assert all(row["seconds"] < 1.5 for row in rows), max(row["seconds"] for row in rows)
    assert not any(row["equal"] for row in rows if row["verdict"] != "correct")
