"""verifier.impl = "math_verify" (HF math-verify in the isolated math workers,
with the task's extraction rule) and "reward" (a function by import path)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from constellation.protocol.config import from_dict
from constellation.protocol.messages import Candidate, Problem, VerifyRequest
from roles.verifier_reward import RewardVerifier, load_reward_fn

GSM8K_SOLUTIONS = Path("/work/shared/data/gsm8k/example_model_solutions.jsonl")


def problem(extract: str = "full", reference: str = "72") -> Problem:
    return Problem(id="p", task="math", prompt="Q: ?\n", data={"answer": reference, "extract": extract},
                   reference=reference)


def request(texts: list[str], prob: Problem) -> VerifyRequest:
    cands = [Candidate(id=f"c{i}", problem_id=prob.id, text=t, logprob=0.0, adapter_version=0)
             for i, t in enumerate(texts)]
    return VerifyRequest(request_id="v", problem=prob, candidates=cands)


@pytest.fixture(scope="module")
def math_verify_role(tmp_path_factory):
    pytest.importorskip("math_verify")
    from roles.verifier_math_verify import MathVerifyVerifier

    role = MathVerifyVerifier(from_dict({"verifier": {"math_timeout": 5.0, "math_workers": 1}}),
                              tmp_path_factory.mktemp("mv"))
    role.setup()
    yield role
    role.close()


def test_math_verify_judges_answers_in_isolated_workers(math_verify_role):
    texts = ["so \\boxed{72}.", "The answer is 71.", "no idea", "$\\frac{144}{2}$", "x" * 200_000]
    verdicts = math_verify_role.handle(request(texts, problem())).items
    assert [v.status for v in verdicts] == ["pass", "fail", "fail", "pass", "fail"]
    assert verdicts[0].heldout_outputs == ["72"] and verdicts[2].detail == "no_answer"


def test_math_verify_reads_the_part_the_extraction_rule_names(math_verify_role):
    # the last line is "#### 72"; the boxed 5 is earlier work, which "full" would not single out either way
    texts = ["first \\boxed{5}\n#### 72", "#### 72 \\boxed{5}\n", "nothing marked"]
    verdicts = math_verify_role.handle(request(texts, problem("after:####"))).items
    assert [v.status for v in verdicts] == ["pass", "fail", "fail"]
    assert verdicts[2].detail == "no_answer"


def test_math_verify_gives_a_timeout_verdict_at_the_deadline(tmp_path):
    pytest.importorskip("math_verify")
    from roles.verifier_math_verify import MathVerifyVerifier

    role = MathVerifyVerifier(from_dict({"verifier": {"math_timeout": 0.5}}), tmp_path)
    role.setup()
    try:  # a power tower sympy cannot evaluate in time
        v = role.handle(request(["$9^{9^{9^{9^{9}}}}$"], problem(reference="9^{9^{9^{9^{9}}}}+1"))).items[0]
        assert v.status in ("timeout", "fail")
        assert role.handle(request(["\\boxed{72}"], problem())).items[0].status == "pass"  # worker replaced
    finally:
        role.close()


@pytest.mark.skipif(not GSM8K_SOLUTIONS.exists(), reason="../shared/data/gsm8k is not on this machine")
def test_math_verify_agrees_with_the_gsm8k_labels(math_verify_role):
    import json

    rows = [json.loads(x) for x in GSM8K_SOLUTIONS.read_text().splitlines()[:40]]
    agree = total = 0
    for row in rows:
        sols = row["model_solutions"] if "model_solutions" in row else {k: v for k, v in row.items()
                                                                         if isinstance(v, dict) and "solution" in v}
        prob = problem("after:A:", row["ground_truth"].rsplit("A:", 1)[1].strip())
        texts = [s["solution"] for s in sols.values()]
        verdicts = math_verify_role.handle(request(texts, prob)).items
        agree += sum((v.status == "pass") == s["is_correct"] for v, s in zip(verdicts, sols.values()))
        total += len(texts)
    assert total >= 160 and agree / total >= 0.95, (agree, total)


def reward_exact(prompt: str, completion: str, answer: str) -> bool:
    return completion.strip().endswith(answer)


def reward_float(prompt: str, completion: str, answer: str) -> float:
    return {"good": 0.9, "meh": 0.5, "bad": 0.1, "nan": math.nan}.get(completion.strip(), 0.0)


def reward_raises(prompt: str, completion: str, answer: str) -> bool:
    raise RuntimeError("boom")


def test_reward_function_by_import_path_with_a_threshold(tmp_path):
    role = RewardVerifier(from_dict({"verifier": {"reward_fn": "tests.test_math_verify:reward_float",
                                                  "reward_threshold": 0.5}}), tmp_path)
    role.setup()
    verdicts = role.handle(request(["good", "meh", "bad", "nan"], problem())).items
    assert [v.status for v in verdicts] == ["pass", "pass", "fail", "runtime_error"]
    role = RewardVerifier(from_dict({"verifier": {"reward_fn": "tests.test_math_verify:reward_exact"}}), tmp_path)
    role.setup()
    verdicts = role.handle(request(["it is 72", "it is 7"], problem("last_number"))).items
    assert [v.status for v in verdicts] == ["pass", "fail"] and verdicts[1].heldout_outputs == ["7"]


def test_a_raising_reward_function_is_that_candidates_verdict(tmp_path):
    role = RewardVerifier(from_dict({"verifier": {"reward_fn": "tests.test_math_verify:reward_raises"}}), tmp_path)
    role.setup()
    v = role.handle(request(["x"], problem())).items[0]
    assert v.status == "runtime_error" and "RuntimeError" in v.detail


def test_bad_reward_paths_are_refused_at_setup():
    for path, word in [("nocolon", "package.module:function"), ("tests.nope:f", "ModuleNotFoundError"),
                       ("tests.test_math_verify:missing", "AttributeError")]:
        with pytest.raises(ValueError, match=word):
            load_reward_fn(path)
