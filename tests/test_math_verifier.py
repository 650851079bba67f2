"""The math-answer verifier: extraction, equivalence, hostile input, isolation, CLI, role."""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("sympy")

from verifiers.math import MathChecker, check_answer, extract_answer  # noqa: E402
from verifiers.math.equivalence import judge  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GSM8K = Path("/work/shared/data/gsm8k")
# equal as values, but proving it expands (x+y+z+w+1)^30: ~20 s of sympy
SLOW = (r"(x+y+z+w+1)^{30}", r"\boxed{\frac{(2x+2y+2z+2w+2)^{30}}{2^{30}}}")


@pytest.fixture(scope="module")
def checker():
    with MathChecker(workers=2, timeout=1.0) as c:
        c.warm_up()
        yield c


# -- extraction ---------------------------------------------------------------------

def test_extraction_order_boxed_first():
    text = "The answer is 4. So $5$ and finally \\boxed{6} then 7"
    assert extract_answer(text) == "6"


def test_extraction_order_answer_is_before_math_and_numbers():
    assert extract_answer("We get $x = 2$. The answer is 3. Check: 9") == "3"
    assert extract_answer("Final answer: \\frac{1}{2}\nsome 8") == "\\frac{1}{2}"


def test_extraction_order_math_before_last_number():
    assert extract_answer("Thus the area is $12\\pi$ square units, not 13 units") == "12\\pi"


def test_extraction_last_number_as_last_resort():
    assert extract_answer("She has 3 apples and buys 4 more, so 7 apples in all") == "7"
    assert extract_answer("no digits here at all, sorry") is None


def test_extraction_last_boxed_with_nested_braces():
    assert extract_answer("\\boxed{1} then \\boxed{\\frac{1}{\\sqrt{2}}}") == "\\frac{1}{\\sqrt{2}}"


def test_extraction_skips_unbalanced_boxed():
    assert extract_answer("\\boxed{5} and then \\boxed{\\frac{1}{2}") == "5"


def test_extraction_currency_dollars_are_not_math():
    assert extract_answer("It costs $5 and then another $7 in total, 12 dollars") == "12"


# -- equivalence, by format category -------------------------------------------------

EQUAL = [
    ("fraction", "\\frac{1}{2}", "\\boxed{0.5}"),
    ("decimal", "2.50", "\\boxed{2.5}"),
    ("repeating decimal", "\\frac{1}{3}", "\\boxed{0.\\overline{3}}"),
    ("radical", "2\\sqrt{3}", "\\boxed{\\sqrt{12}}"),
    ("pi", "\\frac{\\pi}{2}", "\\boxed{\\pi/2}"),
    ("unicode minus", "-5", "\\boxed{\u22125}"),
    ("scientific", "1500", "\\boxed{1.5 \\times 10^{3}}"),
    ("scientific e", "3e8", "\\boxed{300000000}"),
    ("thousands comma", "1000", "\\boxed{1,000}"),
    ("thousands braces", "1000", "\\boxed{1{,}000}"),
    ("thousands \\!", "10000", "\\boxed{10,\\!000}"),
    ("thousands thin space", "1000", "\\boxed{1\\,000}"),
    ("mixed number", "3\\frac{1}{2}", "\\boxed{\\frac{7}{2}}"),
    ("percent", "50\\%", "\\boxed{50}"),
    ("degrees", "30^\\circ", "\\boxed{30}"),
    ("units", "12", "\\boxed{12 \\text{ cm}^2}"),
    ("currency", "18", "The answer is \\$18."),
    ("x = 3", "3", "\\boxed{x=3}"),
    ("equation", "y=2x+1", "\\boxed{2x-y+1=0}"),
    ("interval", "(1,2]", "\\boxed{(1, 2]}"),
    ("inequality", "(1,2]", "\\boxed{1 < x \\le 2}"),
    ("union", "(-\\infty,-2)\\cup(2,\\infty)", "\\boxed{(2,\\infty)\\cup(-\\infty,-2)}"),
    ("set unordered", "\\{1,2,3\\}", "\\boxed{\\{3,1,2\\}}"),
    ("tuple", "(1,-2)", "\\boxed{(1, -2)}"),
    ("matrix", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\boxed{\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}}"),
    ("choice", "B", "The answer is \\textbf{(B)}."),
    ("number word", "5", "The answer is five."),
    ("latex spacing", "\\frac{3}{4}", "\\boxed{\\left(\\dfrac{3}{4}\\right)}"),
    ("text", "\\text{Monday}", "\\boxed{\\text{Monday}}"),
]

UNEQUAL = [
    ("1/3 vs 0.333", "\\frac{1}{3}", "\\boxed{0.333}"),
    ("pi vs 3.14", "\\pi", "\\boxed{3.14}"),
    ("pi vs many digits", "\\pi", "\\boxed{3.14159265358979323846264338327950288419716939937510582097494459}"),
    ("1/2004! vs 1/2006!", "\\frac{1}{2004!}", "\\boxed{\\frac{1}{2006!}}"),
    ("tiny difference", "1", "\\boxed{1+10^{-50}}"),
    ("percent is not a fraction", "0.5", "\\boxed{50\\%}"),
    ("equations compared whole", "x+y=3", "\\boxed{x-y=3}"),
    ("open vs closed end", "(1,2]", "\\boxed{[1,2]}"),
    ("set vs tuple", "\\{1,2\\}", "\\boxed{(1,2)}"),
    ("tuple order", "(1,2)", "\\boxed{(2,1)}"),
    ("arity", "(1,2,3)", "\\boxed{(1,2)}"),
    ("matrix transpose", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\boxed{\\begin{pmatrix}1&3\\\\2&4\\end{pmatrix}}"),
    ("choice letter", "(C)", "\\boxed{D}"),
    ("sign", "-5", "\\boxed{5}"),
]


@pytest.mark.parametrize("name,gold,pred", EQUAL, ids=[c[0] for c in EQUAL])
def test_equal_formats(name, gold, pred):
    out = judge(gold, pred)
    assert out["verdict"] == "correct" and out["equal"], out


@pytest.mark.parametrize("name,gold,pred", UNEQUAL, ids=[c[0] for c in UNEQUAL])
def test_unequal_values(name, gold, pred):
    out = judge(gold, pred)
    assert out["verdict"] == "incorrect" and not out["equal"], out


def test_no_answer_and_parse_error_verdicts():
    assert judge("5", "")["verdict"] == "no_answer"
    assert judge("5", "I cannot say, sorry about that")["verdict"] == "no_answer"
    assert judge("5", "\\boxed{3 +* }")["verdict"] == "parse_error"


# -- hostile input, isolation, deadline ----------------------------------------------

HOSTILE = [
    "\\boxed{10^{10^{10}}}", "\\boxed{9^{9^{9^{9}}}}", "\\boxed{100000!}", "\\boxed{(10^{10})!}",
    "\\boxed{x^{x^{x^{x^{x}}}}}", "\\boxed{" + "(" * 5000 + "1" + ")" * 5000 + "}",
    "\\boxed{" + "\\frac{" * 300 + "1", "\\boxed{}}}}{{{", "", "\x00\xff\xfe junk \x1b[31m",
    "9" * 1_000_000, "\\boxed{" * 100_000 + "1", bytes(range(256)).decode("latin-1") * 4096,
    "\\boxed{1.5e100000000}", "\\boxed{\\infty-\\infty}", "\\boxed{\\frac{0}{0}}",
    "\\(" * 300_000, "the answer is " * 100_000, "\\boxed{1 " + "a" * 1900 + "!}",  # quadratic/exponential regex bait
    "\\boxed{1 " + "ab " * 600 + "}", "$5 and more words " * 50_000,
]


def test_hostile_inputs_decided_under_one_second(checker):
    for pred in HOSTILE:
        t0 = time.monotonic()
        v = checker.check("2", pred)
        elapsed = time.monotonic() - t0
        assert elapsed < 1.0 and v.seconds < 1.0, (pred[:60], elapsed)
        assert not v.equal and v.verdict != "timeout", (pred[:60], v)


def test_timeout_from_a_thread_kills_and_replaces_the_worker(checker):
    results = []
    thread = threading.Thread(target=lambda: results.append(checker.check(*SLOW, timeout=0.5)))
    t0 = time.monotonic()
    thread.start()
    thread.join(10)
    assert results and results[0].verdict == "timeout" and not results[0].equal, results
    assert time.monotonic() - t0 < 2.0
    follow_up = [checker.check("1/3", "\\boxed{\\frac{2}{6}}") for _ in range(3)]  # replaced worker answers
    assert all(v.verdict == "correct" for v in follow_up), follow_up


def test_crashed_worker_becomes_a_verdict_and_is_replaced():
    with MathChecker(workers=1, timeout=1.0) as c:
        c.warm_up()
        worker = c._idle.get()
        worker.proc.kill()
        worker.proc.wait()
        c._idle.put(worker)
        v = c.check("1", "\\boxed{1}")
        assert v.verdict == "parse_error" and "crashed" in v.error, v
        assert c.check("1", "\\boxed{1}").verdict == "correct"


def test_check_answer_api_fields():
    v = check_answer("\\frac{1}{3}", "so the answer is $\\frac{2}{6}$.")
    assert (v.verdict, v.equal, v.extracted) == ("correct", True, "\\frac{2}{6}")
    assert v.gold_normalized == "1/3" and v.pred_normalized == "1/3" and 0 <= v.seconds < 1.0


def test_check_many_keeps_input_order(checker):
    pairs = [(str(i), f"\\boxed{{{i if i % 3 else i + 1}}}") for i in range(30)]
    verdicts = checker.check_many(pairs, jobs=2)
    assert [v.equal for v in verdicts] == [bool(i % 3) for i in range(30)]


# -- CLI --------------------------------------------------------------------------------

def test_cli_end_to_end_with_a_malformed_line(tmp_path):
    lines = [json.dumps({"gold": "1/2", "pred": "The answer is $0.5$."}), "{not json",
             json.dumps({"gold": "3", "pred": 3}), "", json.dumps({"gold": "\\pi", "pred": "\\boxed{3.14}"})]
    path = tmp_path / "answers.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out = subprocess.run([sys.executable, "-m", "launch.cli", "verify", "--verifier", "math", str(path),
                          "--jobs", "2"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["verdict"] for r in rows] == ["correct", "parse_error", "parse_error", "incorrect"]
    assert rows[0]["equal"] is True and rows[0]["extracted"] == "0.5"
    assert "line 2: not JSON" in rows[1]["error"] and "line 3: field 'pred'" in rows[2]["error"]
    assert "4 lines: correct 1, incorrect 1, parse_error 2" in out.stderr and "p99" in out.stderr


def test_constellation_cli_imports_without_sympy():
    code = "import sys; sys.modules['sympy'] = None; import launch.cli, launch.verify; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# -- the verifier role ---------------------------------------------------------------------

def test_role_maps_math_verdicts_to_verdicts(tmp_path):
    from constellation.protocol.config import Config
    from constellation.protocol.messages import Candidate, Problem, VerifyRequest
    from roles.verifier_math import MathVerifier

    role = MathVerifier(Config(), tmp_path)
    role.setup()
    problem = Problem(id="p1", task="math", prompt="What is 6*7?", data={}, reference="42")
    texts = ["6*7 = 42, so \\boxed{42}", "The answer is 41.", "no idea, really", "\\boxed{4 +* 2}"]
    request = VerifyRequest(request_id="r1", problem=problem, candidates=[
        Candidate(id=f"c{i}", problem_id="p1", text=t, logprob=0.0, adapter_version=0) for i, t in enumerate(texts)])
    try:
        items = role.handle(request).items
    finally:
        role.checker.close()
    assert [v.status for v in items] == ["pass", "fail", "fail", "parse_error"]
    assert [v.heldout_correct for v in items] == [True, False, False, False]
    assert [(v.visible_passed, v.visible_total) for v in items] == [(1, 1), (0, 1), (0, 1), (0, 1)]
    assert items[0].heldout_outputs == ["42"] and items[2].heldout_outputs is None
    assert items[1].detail == "incorrect" and items[2].detail == "no_answer"
    with pytest.raises(ValueError, match="task 'math'"):
        role.handle(VerifyRequest(request_id="r2", problem=Problem(id="p2", task="dsl", prompt="", data={}),
                                  candidates=[]))


# -- real data: GSM8K labeled model solutions ------------------------------------------------

@pytest.mark.skipif(not GSM8K.exists(), reason="GSM8K data not present")
def test_gsm8k_labeled_solutions_agreement(checker):
    gold = {}
    for line in (GSM8K / "test.jsonl").open():
        row = json.loads(line)
        gold[row["question"]] = row["answer"].split("####")[-1].strip()
    pairs, labels = [], []
    for line in (GSM8K / "example_model_solutions.jsonl").open():
        row = json.loads(line)
        for value in row.values():
            if isinstance(value, dict):
                pairs.append((gold[row["question"]], value["solution"]))
                labels.append(value["is_correct"])
    verdicts = checker.check_many(pairs, jobs=2)
    agree = sum(v.equal == label for v, label in zip(verdicts, labels)) / len(labels)
    print(f"GSM8K labeled agreement: {agree:.4f} on {len(labels)} solutions")
    assert len(labels) == 5276 and agree >= 0.99
