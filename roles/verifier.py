"""What every exact verifier role shares: one VerifyRequest in, one Verdicts out.

A subclass names its ``task`` and implements ``verify_one(problem, candidate)
-> Verdict``; this class checks the request, times it, and keeps the counters
the heartbeat reports. Every candidate failure must come back from
``verify_one`` as a typed Verdict; ``handle`` raises only for a malformed
request (a problem of another task family), which the process wrapper turns
into an ``Error`` reply.
"""

from __future__ import annotations

import abc
import time
from pathlib import Path
from typing import Any, ClassVar

from constellation.protocol.config import Config
from constellation.protocol.messages import Candidate, Problem, Verdict, Verdicts, VerifyRequest
from roles.base import Role


class VerdictCounter:
    """Throughput and per-status counts of a verifier role, reported with each heartbeat."""

    def __init__(self) -> None:
        self.verified = 0  # candidates verified since start
        self.busy_seconds = 0.0  # time spent verifying
        self.by_status: dict[str, int] = {}

    def record(self, items: list[Verdict], seconds: float) -> None:
        self.verified += len(items)
        self.busy_seconds += seconds
        for v in items:
            self.by_status[v.status] = self.by_status.get(v.status, 0) + 1

    def stats(self) -> dict[str, float]:
        out = {"done": float(self.verified),
               "per_second": self.verified / self.busy_seconds if self.busy_seconds > 0 else 0.0}
        out.update({f"status_{k}": float(n) for k, n in self.by_status.items()})
        return out


class CandidateVerifier(Role):
    name = "verifier"
    accepts = (VerifyRequest,)
    task: ClassVar[str | None]  # the Problem.task this verifier accepts (None: any task)

    def __init__(self, cfg: Config, run_dir: Path) -> None:
        super().__init__(cfg, run_dir)
        self.counter = VerdictCounter()

    def setup(self) -> dict[str, Any]:
        return {"task": self.task}

    @abc.abstractmethod
    def verify_one(self, problem: Problem, candidate: Candidate) -> Verdict:
        """The verdict of one candidate; never raises for a bad candidate."""

    def handle(self, msg: VerifyRequest) -> Verdicts:
        if not isinstance(msg, VerifyRequest):
            raise TypeError(f"{type(self).__name__} handles VerifyRequest, got {type(msg).__name__}")
        if self.task is not None and msg.problem.task != self.task:
            raise ValueError(f"{type(self).__name__} verifies task {self.task!r}, got problem {msg.problem.id} "
                             f"of task {msg.problem.task!r}")
        t0 = time.perf_counter()
        items = [self.verify_one(msg.problem, c) for c in msg.candidates]
        seconds = time.perf_counter() - t0
        self.counter.record(items, seconds)
        return Verdicts(request_id=msg.request_id, items=items, seconds=seconds)

    def stats(self) -> dict[str, float]:
        return self.counter.stats()
