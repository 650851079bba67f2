"""The exact verifier for the "dsl" task: runs candidate programs on the problem's inputs.

Pure Python (no torch): one Verdict per candidate, in request order (see
roles/verifier.py). Verification is a pure function of (problem,
candidate), so a re-sent request yields the same verdicts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from constellation.protocol.config import Config
from constellation.protocol.messages import Candidate, Problem, Verdict
from roles.verifier import CandidateVerifier
from verifiers.dsl import verify


class DslVerifier(CandidateVerifier):
    """Exact verifier of the string DSL (own safe, step-bounded interpreter)."""

    task = "dsl"

    def __init__(self, cfg: Config, run_dir: Path) -> None:
        super().__init__(cfg, run_dir)
        self.step_limit = cfg.verifier.step_limit

    def setup(self) -> dict[str, Any]:
        return {**super().setup(), "step_limit": self.step_limit}

    def verify_one(self, problem: Problem, candidate: Candidate) -> Verdict:
        return verify(problem, candidate, self.step_limit)
