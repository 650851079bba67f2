"""The verifier for task "code": runs each candidate program against the problem's tests
in a sandboxed child process (verifiers/code.py; read its guarantees and non-guarantees).

Problem.data for task "code": ``tests`` (list of Python test snippets),
``entry_point`` (function name or None) and ``prepend_prompt`` (true when the
prompt is code the completion continues, e.g. a signature and docstring: the
program is then prompt + completion, otherwise the completion alone).

Verdict: status is the sandbox's pass | fail | timeout | crash | memory over
all tests; ``visible_passed``/``visible_total`` count tests; there are no
separate held-out tests, so ``heldout_correct`` is ``status == "pass"`` and
``heldout_outputs`` is None (the critic then sees prompt and program only);
``detail`` lists the per-test results and the first failure.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from constellation.protocol.config import Config
from constellation.protocol.messages import Candidate, Problem, Verdict
from roles.verifier import CandidateVerifier
from verifiers.code import CodeVerdict, Limits, drops_privileges, find_interpreter, run_tests
from verifiers.code_jail import jail_available


def program_text(problem: Problem, completion: str) -> str:
    return problem.prompt + completion if problem.data.get("prepend_prompt") else completion


def per_test_detail(verdict: CodeVerdict, limit: int = 300) -> str:
    """The per-test results and the first failure, e.g. "pass,fail | test 1: assertion failed"."""
    text = ",".join(t.status for t in verdict.tests)
    return (f"{text} | {verdict.detail}" if verdict.detail else text)[:limit]


class CodeVerifier(CandidateVerifier):
    """Python code against tests in a sandboxed child (rlimits, deadline)."""

    task = "code"

    def __init__(self, cfg: Config, run_dir: Path) -> None:
        super().__init__(cfg, run_dir)
        v = cfg.verifier
        self.limits = Limits(cpu_seconds=max(1, math.ceil(v.code_timeout)), wall_seconds=v.code_timeout,
                             memory_bytes=v.code_memory_mb << 20)

    def setup(self) -> dict[str, Any]:
        python = find_interpreter(drops_privileges(self.limits))  # fails at start-up, not per candidate
        return {**super().setup(), "python": python, "jail": jail_available(), "wall_seconds": self.limits.wall_seconds,
                "memory_mb": self.limits.memory_bytes >> 20}

    def verify_one(self, problem: Problem, candidate: Candidate) -> Verdict:
        tests = problem.data["tests"]
        verdict = run_tests(program_text(problem, candidate.text), tests, self.limits,
                            entry_point=problem.data.get("entry_point"))
        return Verdict(candidate_id=candidate.id, problem_id=problem.id, status=verdict.status,
                       visible_passed=verdict.passed, visible_total=len(tests),
                       heldout_correct=verdict.status == "pass", heldout_outputs=None,
                       detail=per_test_detail(verdict))
