"""The study's statistics: bootstrap intervals that cover, and the report on real runs."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from constellation.algorithms.bootstrap import bootstrap, identity_plan, resample_plans
from constellation.protocol import events as ev
from constellation.runtime.store import read_events
from launch.study_report import Trajectory, build_report, crossover_k, fit_line, round_points

ROOT = Path(__file__).resolve().parent.parent


def test_bootstrap_interval_covers_a_known_mean_about_95_percent_of_the_time():
    # 200 synthetic studies of 4 seeds x 60 problems: per-problem success rates
    # vary by seed (seed effect) and by problem; the true mean is 0.4
    rng = np.random.default_rng(7)
    covered = 0
    for trial in range(200):
        data = [np.clip(0.4 + rng.normal(0, 0.03) + rng.normal(0, 0.15, 60), 0, 1) for _ in range(4)]
        # remove clipping bias from the truth: centre each study on the known mean
        shift = 0.4 - np.mean([d.mean() for d in data]) + rng.normal(0, np.std([d.mean() for d in data]) / 2)
        data = [d + shift for d in data]

        def mean(plan, data=data):
            return np.concatenate([data[s][idx] for s, idx in plan]).mean()

        _, lo, hi = bootstrap(mean, [60] * 4, 300, seed=trial)
        covered += lo <= 0.4 <= hi
    assert 0.88 <= covered / 200 <= 0.995


def test_problem_only_bootstrap_covers_a_binomial_mean():
    rng = np.random.default_rng(3)
    covered = 0
    for trial in range(200):
        x = rng.binomial(1, 0.3, 150).astype(float)
        _, lo, hi = bootstrap(lambda plan: x[plan[0][1]].mean(), [150], 400, seed=trial)
        covered += lo <= 0.3 <= hi
    assert 0.90 <= covered / 200 <= 0.99


def test_resample_plans_draw_seeds_then_problems():
    plans = resample_plans([5, 3], 50, np.random.default_rng(0))
    assert all(len(plan) == 2 for plan in plans)
    assert all(len(idx) == (5, 3)[s] and idx.max() < (5, 3)[s] for plan in plans for s, idx in plan)
    assert any(plan[0][0] == plan[1][0] for plan in plans)  # a seed can be drawn twice


def test_fit_line_and_crossover():
    assert fit_line([(1, 0.5, 0.10), (2, 0.4, 0.08), (3, 0.3, 0.06)]) == pytest.approx((0.2, 0.0), abs=1e-9)
    ks = (1, 2, 4, 8)
    assert crossover_k(np.array([.1, .2, .4, .6]), np.array([.2, .3, .4, .5]), ks) == 4
    assert np.isnan(crossover_k(np.array([.1, .2, .3, .4]), np.array([.2, .3, .4, .5]), ks))


def _synthetic_trajectory(seed: int, p1: list[float], n: int = 16, problems: int = 30) -> Trajectory:
    rng = np.random.default_rng(seed)
    correct = {r: rng.binomial(n, p, problems) for r, p in enumerate(p1)}
    return Trajectory(seed, Path(f"/tmp/seed-{seed}"), list(range(len(p1))), [f"E{i}" for i in range(problems)],
                      n, correct, {r: {} for r in correct}, {r: {} for r in correct}, events=[])


def test_round_points_measure_gain_against_previous_headroom():
    t = _synthetic_trajectory(0, [0.2, 0.3])
    (r, headroom, gain), = round_points([t], identity_plan([30]))
    p = {r: t.correct[r].sum() / (30 * 16) for r in (0, 1)}
    assert r == 1 and headroom == pytest.approx(1 - p[0]) and gain == pytest.approx(p[1] - p[0])


def test_report_on_synthetic_trajectories_reads_a_clear_crossover(tmp_path):
    # trained model much better at pass@1, and it stays better at every k: no crossover
    trajs = [_synthetic_trajectory(s, [0.1, 0.5, 0.7]) for s in range(3)]
    report = build_report(trajs, tmp_path, n_boot=100, figures=False)
    assert report.findings["crossover"] == "not reproduced"
    assert report.numbers["crossover"]["pooled"] is None
    assert "no crossover" in report.markdown
    assert json.loads((tmp_path / "report.json").read_text())["findings"] == report.findings


@pytest.mark.slow
def test_study_end_to_end_on_the_micro_preset(tmp_path):
    out = tmp_path / "study"
    proc = subprocess.run([sys.executable, "-m", "launch.cli", "study", "--preset", "study-micro",
                           "--seeds", "2", "--out", str(out), "--bootstrap", "100",
                           "--set", f"model.cache_dir={tmp_path / 'cache'}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = (out / "report.md").read_text()
    for section in ("## 1. Selection", "## 2. Gain per round", "## 3. pass@k", "## Trajectories"):
        assert section in report
    assert "2 seeds x 8 problems" in report
    for png in ("selection.png", "gain_headroom.png", "passk.png"):
        assert (out / png).stat().st_size > 5000
    numbers = json.loads((out / "report.json").read_text())
    assert numbers["seeds"] == [0, 1] and set(numbers["findings"]) == {"selection", "headroom", "crossover"}
    # the numbers come from run.sqlite: both runs exist, with guard readings every round
    for s in (0, 1):
        events = read_events(out / "runs" / f"seed-{s}")
        assert [e.round for e in events if isinstance(e, ev.Guard)] == [0, 1, 2]
    # a second call skips the finished trajectories and rebuilds the same report
    again = subprocess.run([sys.executable, "-m", "launch.cli", "study", "--preset", "study-micro",
                            "--seeds", "2", "--out", str(out), "--bootstrap", "100",
                            "--set", f"model.cache_dir={tmp_path / 'cache'}"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout.count("skipped") == 2


def test_parse_sweep_reads_a_key_and_its_values():
    from launch.study_report import StudyError
    from launch.study_sweep import parse_sweep

    assert parse_sweep("task.n_visible=1, 2,3") == ("task.n_visible", ["1", "2", "3"])
    for bad in ("task.n_visible=1", "n_visible=1,2", "task.n_visible", "task.depths=[1,2],[3]", "task.x=1,,2"):
        with pytest.raises(StudyError):
            parse_sweep(bad)


def test_a_bad_sweep_is_exit_2_before_anything_runs(tmp_path):
    from launch import cli

    assert cli.main(["study", "--preset", "study-micro", "--sweep", "task.n_visible=2", "--out", str(tmp_path)]) == 2
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_sweep_end_to_end_on_the_micro_preset(tmp_path):
    # two values of the trainer's lr, one seed each: lr 0 cannot learn (the control fires), the other can move
    out = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, "-m", "launch.cli", "study", "--preset", str(ROOT / "tests/presets/micro.toml"),
                           "--seeds", "1", "--out", str(out), "--bootstrap", "50", "--parallel", "1",
                           "--sweep", "trainer.lr=0.0,3e-3", "--set", f"model.cache_dir={tmp_path / 'cache'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    numbers = json.loads((out / "report.json").read_text())
    assert numbers["key"] == "trainer.lr" and list(numbers["values"]) == ["0.0", "3e-3"]
    lr0 = numbers["values"]["0.0"]
    assert lr0["controls"]["verdicts"]["trainer_control"] == "fails" and lr0["controls"]["trainer_gain"] == [0, 0, 0]
    for v in numbers["values"].values():
        assert set(v["findings"]) == {"selection", "headroom", "crossover"}
        assert "1" in v["gain_per_round"] and "1" in v["k_star_per_round"]
    for value in ("trainer.lr=0.0", "trainer.lr=3e-3"):
        assert "## Positive controls" in (out / value / "report.md").read_text()
    assert (out / "sweep_headroom.png").stat().st_size > 5000
    assert "sweep_headroom.png" in (out / "report.md").read_text()
    # the paired comparison: 3e-3 minus 0.0 at every k of eval.ks, on the same seed and problems
    assert "## Does trainer.lr change pass@k?" in (out / "report.md").read_text()
    paired = numbers["paired"]["values"]["3e-3"]
    assert set(paired["final_minus_first"]) == set(paired["base_minus_first"]) == {"1", "2", "4", "8"}
    assert paired["verdict"] in ("changes pass@k", "no change detected at this size")
