"""Training progress through the protocol: fit's on_step -> a role's StepLog ->
its heartbeat stats (status.json) -> the console and the monitor; the curve
returns in the role's reply. A fixed step budget, counts only."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from launch.console import fit_progress_text
from launch.monitor import render
from roles.step_log import MAX_POINTS, StepLog

torch = pytest.importorskip("torch")

from constellation.models.fit import FitArgs, fit  # noqa: E402


def test_fit_reports_every_step_to_the_step_log():
    model, log, seen = torch.nn.Linear(3, 1), StepLog(), []
    x = torch.ones(4, 3)
    log.start()

    def on_step(step):
        log(step)
        seen.append(log.stats())

    fit(model, lambda _e: iter([x] * 100), lambda b: model(b).pow(2).mean(), FitArgs(epochs=0, max_steps=7),
        on_step=on_step)
    curve = log.finish()
    assert [p.step for p in curve] == list(range(1, 8))
    assert all(p.lr > 0 and p.grad_norm is not None for p in curve)
    assert [s["fit_step"] for s in seen] == list(range(1, 8)) and seen[0]["fit_total"] == 7
    assert seen[-1]["fit_eta"] == pytest.approx(0.0) and log.stats() == {}  # finished: heartbeats show nothing


def test_a_long_fit_is_thinned_to_a_bounded_curve():
    class Step:
        def __init__(self, n: int) -> None:
            self.step, self.total, self.loss, self.lr, self.grad_norm, self.elapsed, self.spent = n, 0, 1.0, 0.1, 1.0, n, 0.0

    log = StepLog()
    log.start(planned_steps=10 * MAX_POINTS)
    for n in range(1, 10 * MAX_POINTS + 1):
        log(Step(n))
    curve = log.finish()
    assert len(curve) < 2 * MAX_POINTS and curve[-1].step == 10 * MAX_POINTS
    steps = [p.step for p in curve]
    assert len({b - a for a, b in zip(steps, steps[1:])}) == 1  # evenly spaced


def test_monitor_and_console_show_training_step_loss_and_eta(tmp_path):
    stats = {"fit_step": 40.0, "fit_total": 120.0, "fit_loss": 0.5321, "fit_eta": 12.0}
    status = {"updated": 1.0, "roles": {"trainer": {"state": "busy", "stats": stats, "last_heartbeat": 1.0}}}
    (tmp_path / "status.json").write_text(json.dumps(status))
    out = io.StringIO()
    Console(file=out, width=200).print(render(tmp_path, now=2.0))
    assert "step 40/120" in out.getvalue() and "0.532" in out.getvalue()
    assert fit_progress_text("critic", {"fit_step": 0.0}) is None  # not training: no line
