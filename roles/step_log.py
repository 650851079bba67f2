"""A training role's view of its own fit loop: ``StepLog`` is the ``on_step``
callback of ``constellation.models.fit.fit``.

It keeps two things. The latest step, which ``stats()`` adds to the role's
heartbeat (the process wrapper sends it every second, also while the main
thread is inside the fit), so the console and the monitor show step, loss and
an ETA without reading logs. And the round's curve of (step, loss, lr, grad
norm) points, which the role returns in its reply (``AdapterReady.curve``,
``CriticTrained.curve``) and the coordinator writes to the run's events, where
the trackers read it. A long fit is thinned to at most ``MAX_POINTS`` points
(every other point dropped each time the list doubles), so a reply stays small.
"""

from __future__ import annotations

import math
import threading

from constellation.protocol.messages import StepPoint

MAX_POINTS = 2000


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


class StepLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # the heartbeat thread reads what the fit thread writes
        self.points: list[StepPoint] = []
        self._stride = 1  # every _stride-th step is kept
        self._latest: dict[str, float] = {}
        self._planned = 0

    def start(self, planned_steps: int = 0) -> None:
        """A new fit begins. ``planned_steps``: its length when the fit's own
        budget does not say (a loop bounded by epochs only)."""
        with self._lock:
            self.points, self._stride, self._planned = [], 1, planned_steps
            self._latest = {"fit_step": 0.0, "fit_total": float(planned_steps)}

    def __call__(self, step) -> None:  # a constellation.models.fit.FitStep
        total = step.total or self._planned
        spent = step.spent or (step.step / total if total else 0.0)
        eta = step.elapsed * (1 - spent) / spent if spent > 0 else -1.0
        with self._lock:
            self._latest = {"fit_step": float(step.step), "fit_total": float(total), "fit_loss": step.loss,
                            "fit_lr": step.lr, "fit_eta": eta, "fit_elapsed": step.elapsed}
            if step.step % self._stride == 0:
                self.points.append(StepPoint(step.step, _finite(step.loss), step.lr, _finite(step.grad_norm)))
            if len(self.points) >= 2 * MAX_POINTS:
                self.points, self._stride = self.points[1::2], self._stride * 2

    def finish(self) -> list[StepPoint]:
        """The fit ended: heartbeats stop showing it. -> its curve."""
        with self._lock:
            self._latest = {}
            return list(self.points)

    def stats(self) -> dict[str, float]:
        """While a fit runs: fit_step, fit_total (0: unknown), fit_loss, fit_lr,
        fit_eta (seconds, -1 unknown), fit_elapsed. Empty otherwise."""
        with self._lock:
            return {k: v for k, v in self._latest.items() if math.isfinite(v)}
