"""The probe's disagreement, precision and task-level ambiguity statistics, on
pools made by hand (no model)."""

from __future__ import annotations

import random

from constellation.algorithms.selection import Sample
from constellation.protocol import config
from constellation.tasks.dsl import make_problem
from launch.probe import ambiguity_fields, disagree_fraction


def _s(i: int, visible: bool, outputs: tuple, correct: bool = False) -> Sample:
    return Sample(candidate_id=f"c{i:02d}", visible_pass=visible, heldout_correct=correct, heldout_outputs=outputs)


def test_a_group_disagrees_only_when_two_visible_pass_candidates_differ_on_heldout():
    agree = [_s(0, True, ("a",)), _s(1, True, ("a",)), _s(2, False, ("b",))]  # the differing one failed visible
    disagree = [_s(0, True, ("a",)), _s(1, True, ("b",))]
    assert disagree_fraction(agree) == 0.0
    assert disagree_fraction(disagree) == 1.0


def test_disagreement_is_counted_per_group_of_k():
    first = [_s(i, True, ("a",)) for i in range(8)]
    second = [_s(8, True, ("a",))] + [_s(i, True, ("b",)) for i in range(9, 16)]
    assert disagree_fraction(first + second, k=8) == 0.5
    assert disagree_fraction(first + second[:3], k=8) == 0.0  # a partial last group is left out


def test_ambiguity_fields_on_hand_made_pools():
    cfg = config.load("tiny", [])
    problems = [make_problem(random.Random(i), f"P{i}", 1, 3, 6, "narrow") for i in range(4)]
    pools = {
        "P0": [_s(0, True, ("a",), True), _s(1, True, ("b",))],  # disagree; 1 of 2 passing right
        "P1": [_s(0, True, ("a",), True), _s(1, True, ("a",), True)],  # agree; 2 of 2
        "P2": [_s(0, False, ("a",)), _s(1, False, ("b",))],  # nothing passes
        "P3": [],
    }
    f = ambiguity_fields(cfg, problems, pools)
    assert f["disagree_share"] == 0.25
    assert f["visible_precision"] == 0.75  # 3 right of 4 passing, pooled over problems
    assert f["disagree_ci"][0] <= 0.25 <= f["disagree_ci"][1]
    assert 0.0 <= f["ambiguous_share"] <= 1.0  # the DSL task offers open_alternative


def test_a_task_without_open_alternative_reports_no_task_level_ambiguity():
    cfg = config.load("arithmetic", [])
    from constellation.tasks.arithmetic import make_problem as arithmetic_problem
    problems = [arithmetic_problem("A0", 2, "+", 3)]
    f = ambiguity_fields(cfg, problems, {"A0": [_s(0, True, ("5",), True)]})
    assert "ambiguous_share" not in f
    assert f["visible_precision"] == 1.0
