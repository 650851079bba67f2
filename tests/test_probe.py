"""`constellation probe` runs one phase of the real coordinator in-process
(launch/inprocess.py) on a base model built in the test."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from constellation.protocol import config
from launch.probe import probe

pytestmark = pytest.mark.slow


def test_probe_samples_every_problem_through_the_coordinator_and_gives_a_zone(tmp_path):
    cfg = config.load("smoke", [f'model.cache_dir="{tmp_path / "cache"}"', "model.warm_start_steps=20",
                                "task.n_labeled=40"])
    out = io.StringIO()
    result = probe(cfg, n_problems=4, samples=3, console=Console(file=out, width=120))
    assert (result.n_problems, result.samples) == (4, 3)
    assert 0.0 <= result.ci[0] <= result.pass_at_1 <= result.ci[1] <= 1.0
    assert result.zone in ("below", "in", "above")
    assert sum(1 for _ in result.by_difficulty) >= 1
    assert "ZPD probe: 4 eval problems x 3 samples" in out.getvalue()
    assert 0.0 <= result.disagree_ci[0] <= result.disagree_share <= result.disagree_ci[1] <= 1.0
    assert result.ambiguous_share is not None and 0.0 <= result.ambiguous_share <= 1.0  # the DSL can tell
