"""The sweep's paired comparison (launch/study_paired.py) on trajectories built by hand."""

from pathlib import Path

import numpy as np
import pytest

from launch.study_paired import CHANGES, NO_CHANGE, paired_difference, paired_section
from launch.study_report import StudyError, Trajectory

KS = (1, 2, 4, 8)
N = 8  # samples per problem


def _arm(correct_by_seed: dict[int, list[int]], final: list[int] | None = None,
         problems: list[str] | None = None) -> list[Trajectory]:
    """One trajectory per seed; base and final round share the same correct counts
    (the base is untouched by the swept key), ``final`` overrides the final round's."""
    arm = []
    for i, (seed, correct) in enumerate(correct_by_seed.items()):
        ids = problems or [f"E{j}" for j in range(len(correct))]
        rounds = {0: np.array(correct), 1: np.array(final[i] if final else correct)}
        arm.append(Trajectory(seed, Path(f"/tmp/seed-{seed}"), [0, 1], ids, N, rounds,
                              {0: {}, 1: {}}, {0: {}, 1: {}}))
    return arm


def _counts(seed: int) -> list[int]:
    return list(np.random.default_rng(seed).integers(0, N, 20))  # 0..7 correct of 8: room for one more


def test_one_more_correct_sample_per_problem_is_a_difference_above_zero():
    first = _arm({s: _counts(s) for s in (0, 1, 2)})
    better = _arm({s: _counts(s) for s in (0, 1, 2)}, final=[[c + 1 for c in _counts(s)] for s in (0, 1, 2)])
    est, lo, hi = paired_difference(first, better, KS, 200, lambda t: t.final)
    assert est[0] == pytest.approx(1 / N)  # pass@1 gains exactly one sample in N on every problem
    assert np.all(lo > 0) and np.all(est > 0)
    base = paired_difference(first, better, KS, 200, lambda t: 0)
    assert np.all(base[0] == 0) and np.all(base[1] == 0) and np.all(base[2] == 0)


def test_identical_arms_differ_by_exactly_zero_with_a_zero_width_interval():
    a = _arm({s: _counts(s) for s in (0, 1)})
    b = _arm({s: _counts(s) for s in (0, 1)})
    est, lo, hi = paired_difference(a, b, KS, 200, lambda t: t.final)
    assert np.all(est == 0) and np.all(lo == 0) and np.all(hi == 0)


def test_arms_with_different_seeds_or_problems_are_refused():
    a = _arm({0: _counts(0), 1: _counts(1)})
    with pytest.raises(StudyError, match=r"\[0, 2\].*\[0, 1\]"):
        paired_difference(a, _arm({0: _counts(0), 2: _counts(1)}), KS, 10, lambda t: t.final)
    renamed = _arm({0: _counts(0), 1: _counts(1)}, problems=[f"E{j}" for j in range(19)] + ["X"])
    with pytest.raises(StudyError, match="X"):
        paired_difference(a, renamed, KS, 10, lambda t: t.final)


def test_the_section_gives_a_verdict_per_value_and_a_zero_base_line():
    counts = {s: _counts(s) for s in (0, 1)}
    arms = {"none": _arm(counts), "one_step": _arm(counts),
            "worse": _arm(counts, final=[[max(c - 2, 0) for c in counts[s]] for s in counts])}
    lines, numbers = paired_section("coordinator.overlap", arms, list(KS), 100)
    assert "one-step staleness" in lines[0]
    assert numbers["values"]["one_step"]["verdict"] == NO_CHANGE
    assert numbers["values"]["worse"]["verdict"] == CHANGES
    assert numbers["values"]["worse"]["final_minus_first"]["1"][2] < 0
    assert all(not v["base_differs"] and v["base_minus_first"]["8"] == [0, 0, 0] for v in numbers["values"].values())
    assert sum(line.startswith("| ") for line in lines) == 1 + 2  # the header and a row per value after the first


def test_the_section_says_why_when_the_arms_cannot_be_paired():
    arms = {"1": _arm({0: _counts(0)}), "2": _arm({1: _counts(0)})}
    lines, numbers = paired_section("task.n_visible", arms, list(KS), 10)
    assert "refused" in numbers and "values" not in numbers
    assert any(line.startswith("No paired comparison") for line in lines)


def test_the_sweep_report_carries_the_paired_section(tmp_path, monkeypatch):
    import json

    from launch import study_sweep
    from launch.study_report import Report

    counts = {s: _counts(s) for s in (0, 1)}
    arms = {"none": _arm(counts), "one_step": _arm(counts, final=[[c + 1 for c in counts[s]] for s in counts])}
    monkeypatch.setattr(study_sweep, "load_arms", lambda key, reports, out: arms)
    reports = {v: Report("", {}, {"seeds": [0, 1]}) for v in arms}
    markdown = study_sweep.write_sweep_report("coordinator.overlap", reports, tmp_path, figures=False,
                                              paired=(list(KS), 50))
    assert "## Does one-step staleness change pass@k?" in markdown
    paired = json.loads((tmp_path / "report.json").read_text())["paired"]
    assert paired["values"]["one_step"]["verdict"] == CHANGES and paired["ks"] == list(KS)
    plain = study_sweep.write_sweep_report("coordinator.overlap", reports, tmp_path / "plain", figures=False)
    assert "## Does" not in plain and "paired" not in json.loads((tmp_path / "plain" / "report.json").read_text())


def test_pass_at_k_of_a_new_trajectory_is_never_an_earlier_ones():
    # the per-problem pass@k cache once lived in a module dict keyed by id(trajectory):
    # a trajectory built after another was freed often got its id and read its numbers
    from launch.study_report import pass_curve

    plan = [(0, np.arange(20))]
    for i in range(200):
        count = i % N
        arm = _arm({0: [count] * 20})
        assert pass_curve(arm, lambda t: 1, plan, (1,))[0] == pytest.approx(count / N)
        del arm
