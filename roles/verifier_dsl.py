"""The exact verifier for the "dsl" task: runs candidate programs on the problem's inputs.

Pure Python (no torch): one VerifyRequest (a problem and its candidates) in, one
Verdicts reply out, one Verdict per candidate in the same order. Every candidate
failure (parse error, runtime error, timeout) is a typed Verdict, so ``handle``
only raises for a malformed request (a problem of another task family).
Verification is a pure function of (problem, candidate), so a re-sent request
yields the same verdicts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from constellation.config import Config
from constellation.messages import Verdicts, VerifyRequest
from roles.base import Role
from roles.verdict_counter import VerdictCounter
from verifiers.dsl import verify


class DslVerifier(Role):
    name = "verifier"
    accepts = (VerifyRequest,)

    def __init__(self, cfg: Config, run_dir: Path) -> None:
        super().__init__(cfg, run_dir)
        self.step_limit = cfg.verifier.step_limit
        self.counter = VerdictCounter()

    def setup(self) -> dict[str, Any]:
        return {"task": "dsl", "step_limit": self.step_limit}

    def handle(self, msg: VerifyRequest) -> Verdicts:
        if not isinstance(msg, VerifyRequest):
            raise TypeError(f"DslVerifier handles VerifyRequest, got {type(msg).__name__}")
        if msg.problem.task != "dsl":
            raise ValueError(f"DslVerifier verifies task 'dsl', got problem {msg.problem.id} "
                             f"of task {msg.problem.task!r}")
        t0 = time.perf_counter()
        items = [verify(msg.problem, c, self.step_limit) for c in msg.candidates]
        seconds = time.perf_counter() - t0
        self.counter.record(items, seconds)
        return Verdicts(request_id=msg.request_id, items=items, seconds=seconds)

    def stats(self) -> dict[str, float]:
        return self.counter.stats()
