"""End to end with the DPO trainer: `constellation up --preset smoke --set trainer.impl=dpo`.

Real processes, real sockets, a tiny model; slow."""

from __future__ import annotations

from pathlib import Path

import pytest

from constellation.protocol import events as ev
from smoke_run import up_smoke

pytestmark = pytest.mark.slow


def _up(tmp_path: Path, cache: Path, *sets: str) -> tuple[Path, list[ev.Event]]:
    return up_smoke(tmp_path, cache, 'trainer.impl="dpo"', *sets)


def test_dpo_critic_pairs_two_iterative_rounds(tmp_path, model_cache):
    run_dir, events = _up(tmp_path, model_cache, 'pairs.source="critic"', 'pairs.among="all"', "run.rounds=2",
                          "pairs.mix_rounds=1")
    assert [e.model for e in events if isinstance(e, ev.Eval)] == ["base", "round-1", "round-2"]
    pairs = {e.round: e for e in events if isinstance(e, ev.Pairs)}
    assert set(pairs) == {1, 2} and pairs[1].n_pairs > 0 and pairs[1].source == "critic"
    assert pairs[2].n_earlier == pairs[1].n_pairs  # round 1's pairs mixed into round 2
    trainer = {e.round: e for e in events if isinstance(e, ev.Trainer)}
    assert trainer[1].version == 1 and trainer[1].metrics["init_version"] == 0
    assert trainer[2].version == 2 and trainer[2].metrics["init_version"] == 1  # M1 -> M2
    for key in ("reward_margin", "reward_accuracy", "chosen_logp_shift", "rejected_logp_shift", "n_pairs_critic"):
        assert key in trainer[1].metrics, key
    assert (run_dir / "pairs" / "round-2.msgpack").exists()


def test_dpo_self_judge_round(tmp_path, model_cache):
    _, events = _up(tmp_path, model_cache, 'pairs.source="self_judge"', 'pairs.among="all"')
    pairs = next(e for e in events if isinstance(e, ev.Pairs))
    assert pairs.judge_method == "likelihood" and pairs.n_judged == pairs.n_judge_items > 0
    trainer = next(e for e in events if isinstance(e, ev.Trainer))
    assert trainer.metrics.get("skipped") == 1 or trainer.metrics["n_pairs_self_judge"] == pairs.n_pairs
