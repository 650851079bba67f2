"""The verifier for the "math" task: is a candidate solution's final answer the reference answer?

One VerifyRequest (a problem whose ``reference`` is the gold answer string, and
its candidate solutions) in, one Verdicts reply out, one Verdict per candidate
in order. Each candidate is decided by ``verifiers.math.MathChecker`` in an
isolated worker process with a hard deadline (``verifier.math_timeout``), so a
hostile answer costs at most that long and never stalls the role.

Verdict mapping: status "pass" iff the answer is correct, else "fail"
(incorrect, no_answer), "parse_error" or "timeout"; visible_passed/visible_total
= 1/1 or 0/1 (the answer is the only check); heldout_correct = correct;
heldout_outputs = [extracted answer] (None when nothing was extracted), which
majority vote groups by; detail = the math verdict kind (and its error).
Verification is a pure function of (reference, candidate text), so a re-sent
request yields the same verdicts (timeouts aside).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from constellation.protocol.config import Config
from constellation.protocol.messages import Verdict, Verdicts, VerifyRequest
from roles.base import Role
from roles.verifier import VerdictCounter

_STATUS = {"correct": "pass", "incorrect": "fail", "no_answer": "fail", "parse_error": "parse_error",
           "timeout": "timeout"}


def to_verdict(candidate_id: str, problem_id: str, math_verdict: Any) -> Verdict:
    """The role's Verdict for one MathVerdict (pure; see the module docstring)."""
    correct = math_verdict.verdict == "correct"
    detail = math_verdict.verdict + (f": {math_verdict.error}" if math_verdict.error else "")
    return Verdict(candidate_id=candidate_id, problem_id=problem_id, status=_STATUS[math_verdict.verdict],
                   visible_passed=int(correct), visible_total=1, heldout_correct=correct,
                   heldout_outputs=[math_verdict.extracted] if math_verdict.extracted is not None else None,
                   detail=detail)


class MathVerifier(Role):
    """Final math answers against Problem.reference (sympy, isolated workers)."""

    name = "verifier"
    task = "math"  # the Problem.task it accepts (runtime/config_check.py matches it with the task's)
    accepts = (VerifyRequest,)

    def __init__(self, cfg: Config, run_dir: Path) -> None:
        super().__init__(cfg, run_dir)
        self.timeout = cfg.verifier.math_timeout
        self.workers = cfg.verifier.math_workers
        self.checker = None
        self.counter = VerdictCounter()

    def setup(self) -> dict[str, Any]:
        from verifiers.math import MathChecker

        self.checker = MathChecker(workers=self.workers, timeout=self.timeout)
        self.checker.warm_up()
        return {"task": "math", "timeout": self.timeout, "workers": self.workers}

    def handle(self, msg: VerifyRequest) -> Verdicts:
        if not isinstance(msg, VerifyRequest):
            raise TypeError(f"MathVerifier handles VerifyRequest, got {type(msg).__name__}")
        if msg.problem.task != "math":
            raise ValueError(f"MathVerifier verifies task 'math', got problem {msg.problem.id} "
                             f"of task {msg.problem.task!r}")
        if not isinstance(msg.problem.reference, str) or not msg.problem.reference.strip():
            raise ValueError(f"math problem {msg.problem.id} has no reference answer: {msg.problem.reference!r}")
        if self.checker is None:
            self.setup()
        t0 = time.perf_counter()
        results = self.checker.check_many([(msg.problem.reference, c.text) for c in msg.candidates], jobs=self.workers)
        items = [to_verdict(c.id, msg.problem.id, r) for c, r in zip(msg.candidates, results)]
        seconds = time.perf_counter() - t0
        self.counter.record(items, seconds)
        return Verdicts(request_id=msg.request_id, items=items, seconds=seconds)

    def close(self) -> None:
        if self.checker is not None:
            self.checker.close()
            self.checker = None

    def stats(self) -> dict[str, float]:
        return self.counter.stats()
