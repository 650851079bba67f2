import pytest

from constellation.algorithms.guard import CollapseGuard, Reading, diversity


def feed(guard, curve, div):
    return [guard.update(Reading(r, p, d)) for r, (p, d) in enumerate(zip(curve, div))]


def test_collapsing_trajectory_stops_after_patience_falls():
    guard = CollapseGuard(patience=2)
    decisions = feed(guard, [0.30, 0.34, 0.31, 0.27, 0.20], [4.0] * 5)
    assert [d.stop for d in decisions] == [False, False, False, True, True]
    assert decisions[3].falls == 2 and decisions[3].best_round == 1
    assert "fell 2 rounds in a row" in decisions[3].reason and "34.0%" in decisions[3].reason


def test_improving_trajectory_stays_quiet():
    guard = CollapseGuard(patience=1)
    decisions = feed(guard, [0.30, 0.33, 0.35, 0.36], [4.0, 3.8, 3.5, 3.4])
    assert not any(d.stop for d in decisions)
    assert decisions[-1].best_round == 3


def test_a_fall_within_tolerance_is_not_a_fall():
    guard = CollapseGuard(patience=1, tolerance=0.02)
    decisions = feed(guard, [0.30, 0.29, 0.285], [4.0] * 3)
    assert not any(d.stop for d in decisions)
    assert CollapseGuard(patience=1).update(Reading(0, 0.3, 4.0)) and \
        feed(CollapseGuard(patience=1), [0.30, 0.29], [4.0, 4.0])[-1].stop


def test_diversity_collapse_stops_even_while_pass_at_1_rises():
    # the self-consistency failure: one fixed answer, reward up
    guard = CollapseGuard(patience=3, diversity_floor=0.5)
    decisions = feed(guard, [0.30, 0.32, 0.33], [4.0, 2.5, 1.5])
    assert [d.stop for d in decisions] == [False, False, True]
    assert "diversity collapsed" in decisions[-1].reason
    assert decisions[-1].diversity_ratio == pytest.approx(1.5 / 4.0)


def test_readings_must_come_in_round_order_and_be_finite():
    guard = CollapseGuard()
    guard.update(Reading(1, 0.3, 2.0))
    with pytest.raises(ValueError, match="round order"):
        guard.update(Reading(1, 0.3, 2.0))
    with pytest.raises(ValueError, match="val_pass_at_1"):
        guard.update(Reading(2, float("nan"), 2.0))
    with pytest.raises(ValueError, match="patience"):
        CollapseGuard(patience=0)


def test_diversity_counts_distinct_vectors_and_ignores_parse_failures():
    assert diversity([[("a",), ("a",), ("b",), None], [None, None]]) == pytest.approx((2 + 0) / 2)
    with pytest.raises(ValueError):
        diversity([])
