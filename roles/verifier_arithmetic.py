"""The verifier for task "arithmetic": the final answer line against the true result
(verifiers/arithmetic.py: ``grade``). Pure Python, microseconds per candidate."""

from __future__ import annotations

from constellation.protocol.messages import Candidate, Problem, Verdict
from roles.verifier import CandidateVerifier
from verifiers.arithmetic import grade


class ArithmeticVerifier(CandidateVerifier):
    """The arithmetic task: the last answer line against the true result."""

    task = "arithmetic"

    def verify_one(self, problem: Problem, candidate: Candidate) -> Verdict:
        return grade(problem, candidate)
