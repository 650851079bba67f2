"""Throughput and per-status counts of a verifier role, reported with each heartbeat."""

from __future__ import annotations

from constellation.messages import Verdict


class VerdictCounter:
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
