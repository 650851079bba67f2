"""The code sandbox (verifiers/code.py), hostile programs included, and the "code" verifier role."""

from __future__ import annotations

import os
import time

import pytest

from constellation.protocol.config import Config
from constellation.protocol.messages import Candidate, Problem, VerifyRequest
from roles.verifier_code import CodeVerifier
from verifiers.code import Limits, SandboxError, CaseResult, decide, run_tests

DOUBLE_TESTS = ["assert f(2) == 4", "assert f(3) == 6"]
FAST = Limits(cpu_seconds=1, wall_seconds=2.0, memory_bytes=256 << 20)


def run(program: str, tests=DOUBLE_TESTS, limits=FAST):
    t0 = time.monotonic()
    verdict = run_tests(program, tests, limits)
    assert time.monotonic() - t0 < limits.wall_seconds + 2.0, "the sandbox missed its deadline"
    return verdict


def test_correct_program_passes_every_test():
    v = run("def f(x):\n    return 2 * x\n")
    assert v.status == "pass" and [t.status for t in v.tests] == ["pass", "pass"] and v.passed == 2


def test_wrong_program_fails_with_per_test_results():
    v = run("def f(x):\n    return x + 2\n")
    assert v.status == "fail"
    assert [t.status for t in v.tests] == ["pass", "fail"]
    assert "test 1" in v.detail


def test_exception_in_a_test_is_an_error_result():
    v = run("def f(x):\n    return 1 // 0\n")
    assert v.status == "fail" and v.tests[0].status == "error" and "ZeroDivisionError" in v.tests[0].detail


def test_syntax_error_fails_without_running_tests():
    v = run("def f(x) return x\n")
    assert v.status == "fail" and "SyntaxError" in v.detail
    assert all(t.status == "not_run" for t in v.tests)


def test_infinite_loop_times_out_on_cpu_limit():
    v = run("def f(x):\n    while True:\n        pass\n")
    assert v.status == "timeout" and v.tests[0].status == "not_run"


def test_sleeping_program_times_out_on_wall_deadline():
    v = run("import time\ndef f(x):\n    time.sleep(60)\n", limits=Limits(cpu_seconds=5, wall_seconds=1.0))
    assert v.status == "timeout"


def test_fork_bomb_cannot_fork():
    bomb = "import os\ndef f(x):\n    while True:\n        os.fork()\n"
    v = run(bomb)
    assert v.status == "fail" and "BlockingIOError" in v.tests[0].detail


def test_threads_cannot_be_started_either():
    v = run("import threading\ndef f(x):\n    threading.Thread(target=print).start()\n    return 2 * x\n")
    assert v.status == "fail" and "RuntimeError" in v.tests[0].detail


def test_memory_exhaustion_is_a_memory_verdict():
    hog = "def f(x):\n    a = []\n    while True:\n        a.append(bytearray(1 << 20))\n"
    v = run(hog)
    assert v.status == "memory"


def test_os_exit_is_a_crash_and_earlier_results_survive():
    program = "import os\ndef f(x):\n    if x == 3:\n        os._exit(0)\n    return 2 * x\n"
    v = run(program)
    assert v.status == "crash"
    assert [t.status for t in v.tests] == ["pass", "not_run"]


def test_output_flood_is_discarded_and_costs_no_memory():
    flood = ("import os, sys\ndef f(x):\n    for _ in range(2000):\n        print('y' * 10000)\n"
             "        os.write(1, b'z' * 10000)\n    return 2 * x\n")
    v = run(flood)
    assert v.status == "pass"


def test_environment_is_scrubbed():
    os.environ["CST_TEST_SECRET"] = "hunter2"
    try:
        v = run("import os\ndef f(x):\n    return 2 * x if 'CST_TEST_SECRET' not in os.environ else 0\n")
    finally:
        del os.environ["CST_TEST_SECRET"]
    assert v.status == "pass"


def test_tests_see_the_programs_plain_values_and_functions_only():
    program = "import os\nN = 3\nNAMES = ['a', 'b']\ndef f(x):\n    return 2 * x\n"
    assert run(program, tests=["assert N == 3 and NAMES == ['a', 'b'] and f(N) == 6"]).status == "pass"
    assert run(program, tests=["assert os.getcwd()"]).tests[0].status == "error"  # os is no pure module
    with_math = "import math\ndef f(x):\n    return math.sqrt(x)\n"
    assert run(with_math, tests=["assert math.isclose(f(16), 4.0)"]).status == "pass"


def test_humaneval_style_check_function_gets_the_entry_point():
    check = "def check(candidate):\n    assert candidate(5) == 10\n"
    assert run_tests("def double(x):\n    return 2 * x\n", [check], FAST, entry_point="double").status == "pass"
    assert run_tests("def double(x):\n    return x\n", [check], FAST, entry_point="double").status == "fail"


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(SandboxError, match="tests must be"):
        run_tests("x = 1", [], FAST)
    with pytest.raises(SandboxError, match="cpu_seconds"):
        Limits(cpu_seconds=0)


def test_decide_prefers_memory_over_crash_and_marks_unreported_tests():
    status, tests, _ = decide([CaseResult(0, "memory", "MemoryError")], None, 3, False, 1)
    assert status == "memory" and [t.status for t in tests] == ["memory", "not_run", "not_run"]
    assert decide([], None, 2, True, -9)[0] == "timeout"
    assert decide([], None, 2, False, 0)[0] == "crash"


def test_code_verifier_role_gives_typed_verdicts():
    cfg = Config()
    cfg.verifier.code_timeout = 2.0
    role = CodeVerifier(cfg, ".")
    role.setup()
    problem = Problem(id="C1", task="code", prompt="def f(x):\n", reference=None,
                      data={"tests": DOUBLE_TESTS, "entry_point": "f", "prepend_prompt": True})
    cands = [Candidate(id=f"c/{i}", problem_id="C1", text=t, logprob=0.0, adapter_version=0)
             for i, t in enumerate(["    return 2 * x\n", "    return x\n", "    while True: pass\n"])]
    out = role.handle(VerifyRequest(request_id="r1", problem=problem, candidates=cands))
    assert [v.status for v in out.items] == ["pass", "fail", "timeout"]
    assert [v.heldout_correct for v in out.items] == [True, False, False]
    assert out.items[1].visible_passed == 0 and out.items[1].visible_total == 2
    assert out.items[1].detail.startswith("fail,fail | test 0:")
    assert role.stats()["done"] == 3.0


def test_code_verifier_rejects_problems_of_another_task():
    role = CodeVerifier(Config(), ".")
    problem = Problem(id="D1", task="dsl", prompt="", data={})
    with pytest.raises(ValueError, match="task 'dsl'"):
        role.handle(VerifyRequest(request_id="r", problem=problem, candidates=[]))
