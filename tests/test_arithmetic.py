"""The arithmetic task: scratchpads, grading, splits, hint prompts, and its verifier role."""

from __future__ import annotations

import random

import pytest

from constellation.protocol.config import Config, TaskConfig
from constellation.protocol.messages import Candidate, VerifyRequest
from roles.verifier_arithmetic import ArithmeticVerifier
from constellation.tasks.arithmetic import (
    MAX_DIGITS, add_lines, hint_prompt, make_problem, make_split, mul_digit_lines, scratchpad,
)
from verifiers.arithmetic import extract_answer, grade


def cand(text: str, cid: str = "c/0", pid: str = "P") -> Candidate:
    return Candidate(id=cid, problem_id=pid, text=text, logprob=0.0, adapter_version=0)


def test_addition_scratchpad_carries_and_writes_the_final_carry():
    assert add_lines(999, 1) == ["9+1+0=10 ,0", "9+0+1=10 ,00", "9+0+1=10 ,000", "0+0+1=1 ,1000"]


def test_multiplication_by_a_digit_writes_the_whole_last_value():
    assert mul_digit_lines(624, 7) == ["4*7+0=28 ,8", "2*7+2=16 ,68", "6*7+1=43 ,4368"]


@pytest.mark.parametrize("seed", range(200))
def test_scratchpad_ends_in_the_true_result_and_each_line_is_consistent(seed):
    rng = random.Random(seed)
    a, b, op = rng.randint(0, 99999), rng.randint(0, 99), rng.choice("+*")
    pad = scratchpad(a, op, b)
    assert extract_answer(pad) == str(a + b if op == "+" else a * b)
    for line in pad.splitlines():
        if "=" in line:  # "x op y + c = v ,written": the value is right
            lhs, rhs = line.split("=")
            assert eval(lhs) == int(rhs.split(" ,")[0]), line  # test-only eval of our own digits


def test_every_problem_fits_the_model_context():
    rng = random.Random(0)
    for d in range(1, MAX_DIGITS + 1):
        for _ in range(200):
            a = rng.randint(10 ** (d - 1), 10 ** d - 1)
            for op, b in (("+", rng.randint(10 ** (d - 1), 10 ** d - 1)), ("*", 99 if 2 <= d <= 3 else 9)):
                p = make_problem("P", a, op, b)
                assert len(hint_prompt(p)) + len(p.data["solution"]) + 2 <= 256, (a, op, b)


def test_grade_passes_the_right_answer_only():
    p = make_problem("P", 624, "*", 37)
    assert p.reference == "23088"
    assert grade(p, cand(p.data["solution"])).status == "pass"
    wrong = grade(p, cand("624*7\nA: 23089"))
    assert wrong.status == "fail" and wrong.heldout_outputs == ["23089"] and wrong.heldout_correct is False
    assert grade(p, cand("4*7+0=28 ,8")).status == "parse_error"


def test_grade_reads_the_last_answer_line():
    p = make_problem("P", 2, "+", 3)
    assert grade(p, cand("A: 4\nA: 5")).status == "pass"
    assert grade(p, cand("A: 5\nA: 4")).status == "fail"


def test_grade_of_junk_is_a_parse_error():
    p = make_problem("P", 2, "+", 3)
    for junk in ["", "\x00\xff" * 100, "A: " + "9" * 5000, "A:5x"]:
        assert grade(p, cand(junk)).status == "parse_error"


def test_hint_prompt_contains_the_answer_and_the_question():
    p = make_problem("P", 12, "+", 34)
    assert hint_prompt(p) == "Q: 12+34 (46)\n" and p.prompt == "Q: 12+34\n"


def test_split_is_deterministic_and_eval_is_disjoint():
    cfg = TaskConfig(impl="arithmetic", n_labeled=40, n_train=30, n_eval=20, depths=[1, 2, 3], labeled_max_depth=2)
    s1, s2 = make_split(cfg, 7), make_split(cfg, 7)
    assert s1 == s2
    eval_q = {p.prompt for p in s1.eval}
    assert len(eval_q) == 20
    assert not eval_q & {p.prompt for p in s1.train + s1.labeled}
    assert all(p.difficulty <= 2 for p in s1.labeled)
    hinted = [p for p in s1.labeled if p.id.endswith("h")]
    assert len(hinted) == 10 and all("(" in p.prompt for p in hinted)


def test_split_rejects_digit_counts_out_of_range():
    with pytest.raises(ValueError, match="digit counts"):
        make_split(TaskConfig(impl="arithmetic", depths=[6]), 0)


def test_split_says_when_there_are_too_few_distinct_problems():
    with pytest.raises(ValueError, match="distinct questions"):
        make_split(TaskConfig(impl="arithmetic", n_eval=500, n_train=1, n_labeled=1, depths=[1]), 0)


def test_arithmetic_verifier_role():
    p = make_problem("P", 5, "*", 7)
    role = ArithmeticVerifier(Config(), ".")
    out = role.handle(VerifyRequest(request_id="r", problem=p, candidates=[cand("A: 35"), cand("A: 36", "c/1")]))
    assert [v.status for v in out.items] == ["pass", "fail"]


def test_warm_start_trains_on_the_scratchpad_not_the_bare_answer():
    from constellation.protocol.messages import Problem
    from constellation.models.base_model import warm_start_target

    p = make_problem("P", 12, "+", 34)
    assert warm_start_target(p) == p.data["solution"] and p.reference == "46"
    dsl_like = Problem(id="D", task="dsl", prompt="a -> A\n=>", data={"visible": []}, reference="upper(x)")
    assert warm_start_target(dsl_like) == "upper(x)"
