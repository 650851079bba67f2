"""`constellation study`: independent trajectories, and a report with intervals.

A study runs the same preset for several seeds, each trajectory in its own run
directory ``<out>/runs/seed-<s>``, and reads every number of the report from
those runs' ``run.sqlite``. It checks the three findings of the 2026 study:

  1. Selection: critic-guided selection beats verifier-filtered best-of-k, and
     all of the gain is on groups whose visible-pass candidates disagree on
     held-out inputs. Every policy is scored on the same evaluation candidates
     of the trained rounds (the critic is untrained at the base evaluation).
  2. Gain vs headroom: the pass@1 gain of round r tracks the headroom
     1 - pass@1(r - 1) and shrinks over rounds.
  3. Crossover: the trained model wins at small k but the base overtakes it at
     large k (k*, the smallest k where base >= trained).

Intervals are percentile intervals of a two-level bootstrap: resample seeds,
then problems within each drawn seed (a seed drawn twice gets two independent
problem resamples). With one seed only problems are resampled, and the report
says so. The unit is the problem (all of a problem's samples and groups move
together), so correlated samples of one problem never count as independent.

Re-running a study skips finished trajectories and resumes an interrupted one;
``--report-only`` rebuilds the report at any time.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from launch import study_figures
from constellation.algorithms.bootstrap import Plan, bootstrap, identity_plan, resample_plans
from constellation.algorithms.passk import TIE_EPSILON, pass_at_k
from constellation.algorithms.selection import AGREE, DISAGREE, POLICIES, Sample, group_results
from constellation.protocol import events as ev
from constellation.runtime.store import connect, read_events, read_pools

CLASSES = ("all", AGREE, DISAGREE)
KS = tuple(range(1, 65))  # pass@k curves: k = 1..64 (each k <= n of the run)


# ---- The data of one trajectory, read from its run.sqlite ------------------


@dataclass
class Trajectory:
    seed: int
    run_dir: Path
    rounds: list[int]  # evaluated rounds, 0 = base
    problems: list[str]  # eval problem ids, the same order in every array below
    n_samples: int
    correct: dict[int, np.ndarray]  # round -> (P,) held-out correct samples per problem
    # round -> k -> (P, n_policies, n_classes) summed group accuracies, and (P, n_classes) group counts
    sel_sum: dict[int, dict[int, np.ndarray]] = field(default_factory=dict)
    sel_count: dict[int, dict[int, np.ndarray]] = field(default_factory=dict)
    policies: tuple[str, ...] = POLICIES
    events: list[ev.Event] = field(default_factory=list)  # metrics.jsonl, in file order
    passk_cache: dict[tuple[int, tuple[int, ...]], np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def final(self) -> int:
        return self.rounds[-1]


def load_trajectory(run_dir: Path, seed: int, selection_ks: list[int]) -> Trajectory:
    events = read_events(run_dir)
    evals = {e.round: e for e in events if isinstance(e, ev.Eval)}
    if 0 not in evals:
        raise StudyError(f"{run_dir}: no base evaluation recorded (did the run start?)")
    conn = connect(Path(run_dir) / "run.sqlite", readonly=True)
    try:
        pools = {r: read_pools(conn, r, "eval") for r in sorted(evals)}
    finally:
        conn.close()
    return trajectory_of(seed, Path(run_dir), pools, selection_ks, events)


def trajectory_of(seed: int, run_dir: Path, pools: dict[int, dict[str, list[Sample]]], selection_ks: list[int],
                  events: list[ev.Event] | None = None) -> Trajectory:
    """A Trajectory from each evaluated round's pools (round -> problem id ->
    samples in sampling order): the study's runs and the positive controls
    (launch/control.py) are read the same way."""
    rounds = sorted(pools)
    problems = sorted(pools[rounds[0]])
    n = min(len(pool) for r in rounds for pool in pools[r].values())
    scored = any(s.score is not None for pool in pools[rounds[-1]].values() for s in pool)
    policies = tuple(p for p in POLICIES if scored or "critic" not in p)
    traj = Trajectory(seed, run_dir, rounds, problems, n, {}, policies=policies, events=events or [])
    index = {p: i for i, p in enumerate(problems)}
    for r in rounds:
        missing = set(problems) - set(pools[r])
        if missing:
            raise StudyError(f"{run_dir}: round {r} evaluation lacks {len(missing)} problems "
                             f"(e.g. {sorted(missing)[0]}); the run is incomplete")
        # the first n samples of every problem: each k then averages over the same samples
        traj.correct[r] = np.array([sum(s.heldout_correct for s in pools[r][p][:n]) for p in problems])
        rows = group_results({p: pools[r][p][:n] for p in problems}, [k for k in selection_ks if k <= n], policies)
        traj.sel_sum[r], traj.sel_count[r] = {}, {}
        for k in sorted({row.k for row in rows}):
            sums = np.zeros((len(problems), len(policies), len(CLASSES)))
            counts = np.zeros((len(problems), len(CLASSES)))
            for row in (row for row in rows if row.k == k):
                i = index[row.problem_id]
                for c in (0, CLASSES.index(row.agreement)):
                    counts[i, c] += 1
                    sums[i, :, c] += [row.accuracy[p] for p in policies]
            traj.sel_sum[r][k], traj.sel_count[r][k] = sums, counts
    return traj


class StudyError(RuntimeError):
    pass


# ---- Statistics (each a function of a plan) --------------------------------


def pass_curve(trajs: list[Trajectory], round_of: Callable[[Trajectory], int | None], plan: Plan,
               ks: tuple[int, ...]) -> np.ndarray:
    """Mean pass@k over the plan's (trajectory, problem) rows -> (len(ks),)."""
    rows = []
    for s, idx in plan:
        r = round_of(trajs[s])
        if r is None:
            continue
        rows.append(_passk_matrix(trajs[s], r, ks)[idx])
    if not rows:
        return np.full(len(ks), np.nan)
    return np.concatenate(rows).mean(axis=0)


def _passk_matrix(traj: Trajectory, r: int, ks: tuple[int, ...]) -> np.ndarray:
    """(P, len(ks)) unbiased pass@k per problem, cached on the trajectory
    (bootstraps reuse it; a module-level cache keyed by id() would hand a new
    trajectory the matrix of a freed one that had the same id)."""
    key = (r, ks)
    if key not in traj.passk_cache:
        n = traj.n_samples
        traj.passk_cache[key] = np.array([[pass_at_k(n, int(c), k) for k in ks] for c in traj.correct[r]])
    return traj.passk_cache[key]


def selection_stat(trajs: list[Trajectory], k: int, plan: Plan, first_round: int = 1) -> np.ndarray:
    """(n_policies, n_classes) mean group accuracy over the rounds >= first_round
    (1: the trained rounds, where the critic has been trained)."""
    sums, counts = 0.0, 0.0
    for s, idx in plan:
        t = trajs[s]
        for r in t.rounds:
            if r >= first_round and k in t.sel_sum[r]:
                sums = sums + t.sel_sum[r][k][idx].sum(axis=0)
                counts = counts + t.sel_count[r][k][idx].sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(sums) / np.asarray(counts)


def round_points(trajs: list[Trajectory], plan: Plan) -> list[tuple[int, float, float]]:
    """(round, headroom, gain) per drawn trajectory and trained round: headroom
    = 1 - pass@1 of the previous round, gain = pass@1(r) - pass@1(r - 1)."""
    points = []
    for s, idx in plan:
        t = trajs[s]
        p1 = {r: t.correct[r][idx].sum() / (len(idx) * t.n_samples) for r in t.rounds}
        for r in t.rounds[1:]:
            points.append((r, 1.0 - p1[r - 1], p1[r] - p1[r - 1]))
    return points


def fit_line(points: list[tuple[int, float, float]]) -> tuple[float, float]:
    """Least squares gain = intercept + slope * headroom -> (slope, intercept)."""
    if len(points) < 2:
        return math.nan, math.nan
    x = np.array([p[1] for p in points])
    y = np.array([p[2] for p in points])
    if np.ptp(x) == 0:
        return math.nan, float(y.mean())
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)


def crossover_k(base: np.ndarray, trained: np.ndarray, ks: tuple[int, ...]) -> float:
    """Smallest k with base >= trained (NaN: none, the trained model stays ahead)."""
    for k, b, t in zip(ks, base, trained):
        if b >= t - TIE_EPSILON:
            return float(k)
    return math.nan


# ---- The report ------------------------------------------------------------


def _pct(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.1f}"


def _ci(est: float, lo: float, hi: float, scale: float = 100.0, digits: int = 1) -> str:
    if not np.isfinite(est):
        return "n/a"
    return f"{scale * est:.{digits}f} [{scale * lo:.{digits}f}, {scale * hi:.{digits}f}]"


@dataclass
class Report:
    markdown: str
    findings: dict[str, str]  # finding -> "reproduced" | "not reproduced" | "inconclusive"
    numbers: dict[str, Any]  # the headline numbers (also written as report.json)


def build_report(trajs: list[Trajectory], out_dir: Path, n_boot: int = 1000, selection_k: int = 8,
                 figures: bool = True, title: str = "", controls: Report | None = None) -> Report:
    """The report on these trajectories, written to out_dir/report.md and
    report.json (and its figures, unless ``figures`` is off); the positive
    controls' section (launch/control.py), when given, comes first."""
    if not trajs:
        raise StudyError("no finished trajectory to report on")
    out_dir.mkdir(parents=True, exist_ok=True)
    d = _draft(trajs, out_dir, n_boot, figures, title)
    if controls is not None:
        d.lines += controls.markdown.splitlines() + [""]
        d.numbers["controls"] = {**controls.numbers, "verdicts": controls.findings}
    _selection_section(d, selection_k)
    _headroom_section(d)
    per_traj = _passk_section(d)
    _trajectories_section(d, per_traj)
    _manifest_section(d)
    markdown = "\n".join(d.lines)
    (out_dir / "report.md").write_text(markdown)
    (out_dir / "report.json").write_text(json.dumps({"findings": d.findings, **d.numbers}, indent=1))
    return Report(markdown, d.findings, d.numbers)


@dataclass
class _Draft:
    """The report being written: what every section reads, and what each adds."""

    trajs: list[Trajectory]
    sizes: list[int]  # eval problems per trajectory
    ks: tuple[int, ...]  # pass@k curves' k, each <= every trajectory's n
    n_boot: int
    out_dir: Path
    figures: bool
    lines: list[str]  # markdown lines
    numbers: dict[str, Any]
    findings: dict[str, str] = field(default_factory=dict)


def _draft(trajs: list[Trajectory], out_dir: Path, n_boot: int, figures: bool, title: str) -> _Draft:
    """The title and the paragraph on the data and the intervals."""
    sizes = [len(t.problems) for t in trajs]
    n_min = min(t.n_samples for t in trajs)
    boot_note = (f"{len(trajs)} seeds x {sizes[0] if len(set(sizes)) == 1 else sizes} problems, "
                 f"{n_boot} bootstrap resamples (seeds, then problems within seeds)"
                 if len(trajs) > 1 else
                 f"1 seed x {sizes[0]} problems, {n_boot} bootstrap resamples of problems only "
                 f"(one seed: the interval ignores seed-to-seed variation)")
    lines = [f"# constellation study{': ' + title if title else ''}", "",
             f"Trajectories: {len(trajs)} (seeds {', '.join(str(t.seed) for t in trajs)}); "
             f"evaluation: {sizes[0]} problems x {n_min} samples each; rounds evaluated: "
             f"{', '.join(str(t.final) for t in trajs)} (per seed).", "",
             f"Every interval is a 95% percentile bootstrap interval: {boot_note}. "
             "Every number is read from the trajectories' run.sqlite.", ""]
    numbers = {"seeds": [t.seed for t in trajs], "n_problems": sizes, "n_samples": n_min, "n_boot": n_boot}
    return _Draft(trajs, sizes, tuple(k for k in KS if k <= n_min), n_boot, out_dir, figures, lines, numbers)


# ---- 1. selection ----------------------------------------------------------


def _selection_section(d: _Draft, selection_k: int) -> None:
    trajs, policies = d.trajs, d.trajs[0].policies
    d.lines += ["## 1. Selection on one candidate pool", ""]
    sel_ks = sorted({k for t in trajs for r in t.rounds if r >= 1 for k in t.sel_sum[r]})
    if not sel_ks:
        d.lines += ["No trained round was evaluated: nothing to select on.", ""]
        d.findings["selection"] = "inconclusive"
        return
    d.lines += ["Held-out accuracy (%) of the candidate each policy picks among k samples, pooled over "
                "the trained rounds' evaluations; groups split by whether their visible-pass candidates "
                "agree on the held-out inputs. Oracle = pass@k of the group.", ""]
    sel: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for k in sel_ks:
        sel[k] = bootstrap(lambda plan, k=k: selection_stat(trajs, k, plan), d.sizes, d.n_boot)
        counts = sum(t.sel_count[r][k].sum(axis=0) for t in trajs for r in t.rounds if r >= 1)
        d.lines += [f"k = {k} (groups: {int(counts[0])} in all, {int(counts[1])} agree, "
                    f"{int(counts[2])} disagree)", "",
                    "| policy | all | agree | disagree |", "|---|---|---|---|"]
        est, lo, hi = sel[k]
        for i, p in enumerate(policies):
            d.lines.append(f"| {p} | " + " | ".join(_ci(est[i, c], lo[i, c], hi[i, c]) for c in range(3)) + " |")
        d.lines.append("")
    d.numbers["selection"] = {str(k): {p: {c: float(sel[k][0][i, j]) for j, c in enumerate(CLASSES)}
                                       for i, p in enumerate(policies)} for k in sel_ks}
    if "critic" in policies:
        _critic_vs_best_of_k(d, selection_k if selection_k in sel_ks else sel_ks[len(sel_ks) // 2])
    else:
        d.findings["selection"] = "inconclusive"
        d.lines += ["The run had no critic (critic.impl = \"none\"): finding 1 cannot be tested.", ""]
    if d.figures:
        study_figures.selection(d.out_dir / "selection.png", sel, policies, CLASSES)
        d.lines += ["![selection](selection.png)", ""]


def _critic_vs_best_of_k(d: _Draft, k0: int) -> None:
    """Finding 1: the critic's pick against best-of-k's at k0, overall and per agreement class."""
    trajs, policies, sizes = d.trajs, d.trajs[0].policies, d.sizes
    ci, bi = policies.index("critic"), policies.index("best_of_k")
    delta = bootstrap(lambda plan: (lambda a: a[ci] - a[bi])(selection_stat(trajs, k0, plan)), sizes, d.n_boot)
    per_seed = [float((lambda a: a[ci, 0] - a[bi, 0])(selection_stat(trajs, k0, identity_plan(sizes)[s:s + 1])))
                for s in range(len(trajs))]
    wins = sum(x > 0 for x in per_seed)
    d_all, d_dis = (delta[0][0], delta[1][0], delta[2][0]), (delta[0][2], delta[1][2], delta[2][2])
    share = d_dis[0] * _class_share(trajs, k0, 2) / d_all[0] if d_all[0] and np.isfinite(d_all[0]) else math.nan
    d.lines += [f"**Critic minus best-of-k at k = {k0}:** {_ci(*d_all)} points overall, "
                f"{_ci(*d_dis)} on disagree groups, "
                f"{_ci(delta[0][1], delta[1][1], delta[2][1])} on agree groups; critic ahead on "
                f"{wins} of {len(trajs)} seeds (per-seed deltas: "
                f"{', '.join(f'{100 * x:+.1f}' for x in per_seed)})."
                + (f" Share of the overall gain from disagree groups: {100 * share:.0f}%." if np.isfinite(share) else ""),
                ""]
    d.numbers["critic_minus_best_of_k"] = {"k": k0, "all": list(map(float, d_all)),
                                           "disagree": list(map(float, d_dis)), "per_seed": per_seed,
                                           "disagree_share": _class_share(trajs, k0, 2)}
    finding = ("reproduced" if d_all[1] > 0 else
               "not reproduced" if d_all[2] <= 0 or d_all[0] <= 0 else "inconclusive")
    d.findings["selection"] = finding
    if not np.isfinite(d_dis[0]):
        d.lines += [f"No group at k = {k0} had visible-pass candidates that disagree on held-out inputs: "
                    "every policy that picks a passing candidate is then equally right, so selection "
                    "cannot matter on this task as configured.", ""]
    d.lines += [f"Finding 1 (critic beats best-of-k, gain on disagree groups): **{finding}** "
                f"(reproduced = the interval of the overall difference lies above 0).", ""]


# ---- 2. gain vs headroom -----------------------------------------------------


def _headroom_section(d: _Draft) -> None:
    trajs, sizes, n_boot = d.trajs, d.sizes, d.n_boot
    d.lines += ["## 2. Gain per round vs remaining headroom", ""]
    points = round_points(trajs, identity_plan(sizes))
    per_round = {}
    for r in range(1, max(t.final for t in trajs) + 1):
        per_round[r] = bootstrap(lambda plan, r=r: _mean_gain(round_points(trajs, plan), r), sizes, n_boot)
    d.numbers["gain_per_round"] = {str(r): [float(x) for x in v] for r, v in per_round.items()}
    if len(points) < 2:
        d.lines += ["Fewer than two (trajectory, round) points: no line to fit.", ""]
        d.findings["headroom"] = "inconclusive"
        return
    fit = bootstrap(lambda plan: fit_line(round_points(trajs, plan)), sizes, n_boot)
    d.lines += ["| round | trajectories | mean pass@1 gain (points) | mean headroom |", "|---|---|---|---|"]
    for r, (est, lo, hi) in per_round.items():
        pts = [p for p in points if p[0] == r]
        d.lines.append(f"| {r} | {len(pts)} | {_ci(est, lo, hi)} | "
                       f"{_pct(float(np.mean([p[1] for p in pts]))) if pts else 'n/a'}% |")
    (slope, intercept), (slo, ilo), (shi, ihi) = fit[0], fit[1], fit[2]
    d.lines += ["", f"Fitted line over {len(points)} (trajectory, round) points: gain = "
                f"{intercept:+.3f} [{ilo:+.3f}, {ihi:+.3f}] + {slope:.3f} [{slo:.3f}, {shi:.3f}] x headroom.", ""]
    gains = [per_round[r][0] for r in sorted(per_round) if np.isfinite(per_round[r][0])]
    shrinks = len(gains) >= 2 and all(a >= b for a, b in zip(gains, gains[1:]))
    first_lo, first_hi = per_round[1][1], per_round[1][2]
    # the finding has three parts: round 1 gains (raises the ceiling), the gain
    # grows with headroom (slope > 0), and gains shrink round over round
    finding = ("reproduced" if first_lo > 0 and slo > 0 and shrinks else
               "not reproduced" if first_hi <= 0 or shi <= 0 else "inconclusive")
    d.findings["headroom"] = finding
    d.numbers["headroom_fit"] = {"slope": [float(slope), float(slo), float(shi)],
                                 "intercept": [float(intercept), float(ilo), float(ihi)],
                                 "mean_gain_per_round": {str(r): float(v[0]) for r, v in per_round.items()}}
    d.lines += [f"Finding 2 (STaR gains, the gain tracks headroom and shrinks): **{finding}** "
                f"(reproduced = round-1 gain interval above 0, slope interval above 0, and mean gain "
                f"non-increasing over rounds; not reproduced = round-1 gain or slope interval at or below 0; "
                f"mean gains: "
                f"{', '.join(f'{100 * g:+.1f}' for g in gains)}).", ""]
    if d.figures:
        _draw_headroom(d.out_dir / "gain_headroom.png", points, trajs, sizes, n_boot)
        d.lines += ["![gain vs headroom](gain_headroom.png)", ""]


# ---- 3. pass@k curves and crossover ----------------------------------------------


def _passk_section(d: _Draft) -> list[float]:
    """The curves table and finding 3. -> k* per trajectory (NaN: none)."""
    trajs, sizes, n_boot, ks = d.trajs, d.sizes, d.n_boot, d.ks
    d.lines += ["## 3. pass@k of the base and of each round; the crossover k*", ""]
    curves = {}
    for r in range(0, max(t.final for t in trajs) + 1):
        curves[r] = bootstrap(lambda plan, r=r: pass_curve(trajs, lambda t: r if r in t.rounds else None, plan, ks),
                              sizes, n_boot)
    final = bootstrap(lambda plan: pass_curve(trajs, lambda t: t.final, plan, ks), sizes, n_boot)
    show = [k for k in (1, 2, 4, 8, 16, 32, 64) if k in ks]
    header = "| model | " + " | ".join(f"pass@{k}" for k in show) + " |"
    d.lines += [header, "|---" * (len(show) + 1) + "|"]
    for r, (est, lo, hi) in curves.items():
        d.lines.append(f"| {'base' if r == 0 else f'round {r}'} | " +
                       " | ".join(_ci(est[ks.index(k)], lo[ks.index(k)], hi[ks.index(k)]) for k in show) + " |")
    est, lo, hi = final
    d.lines.append("| final (each seed's last round) | " +
                   " | ".join(_ci(est[ks.index(k)], lo[ks.index(k)], hi[ks.index(k)]) for k in show) + " |")
    diff = bootstrap(lambda plan: pass_curve(trajs, lambda t: t.final, plan, ks)
                     - pass_curve(trajs, lambda t: 0, plan, ks), sizes, n_boot)
    d.lines += ["", "Final minus base (points): " + ", ".join(
        f"k={k}: {_ci(diff[0][ks.index(k)], diff[1][ks.index(k)], diff[2][ks.index(k)])}" for k in show), ""]
    per_traj = [crossover_k(_passk_matrix(t, 0, ks).mean(0), _passk_matrix(t, t.final, ks).mean(0), ks)
                for t in trajs]
    d.numbers["base_pass_at_1"] = [float(x[0]) for x in curves[0]]
    # k* of each round against the base, the interval over the resamples that cross (the sweep's figure)
    d.numbers["k_star_per_round"] = {str(r): [float(x) for x in bootstrap(
        lambda plan, r=r: crossover_k(pass_curve(trajs, lambda t: 0, plan, ks),
                                      pass_curve(trajs, lambda t: r if r in t.rounds else None, plan, ks), ks),
        sizes, n_boot)] for r in curves if r >= 1}
    _crossover_finding(d, crossover_k(curves[0][0], final[0], ks), per_traj, diff)
    if d.figures:
        study_figures.pass_at_k(d.out_dir / "passk.png", curves, ks)
        d.lines += ["![pass@k](passk.png)", ""]
    return per_traj


def _crossover_finding(d: _Draft, pooled: float, per_traj: list[float], diff) -> None:
    """Finding 3 from the pooled k*, its spread over resamples and ``diff``
    (final minus base pass@k: estimate, low, high, each (len(ks),))."""
    trajs, ks = d.trajs, d.ks
    rng = np.random.default_rng(1)
    boot_k = np.array([crossover_k(pass_curve(trajs, lambda t: 0, plan, ks),
                                   pass_curve(trajs, lambda t: t.final, plan, ks), ks)
                       for plan in resample_plans(d.sizes, d.n_boot, rng)])
    none_share = float(np.isnan(boot_k).mean())
    found = boot_k[~np.isnan(boot_k)]
    k_text = ("no crossover: the trained model is ahead at every k up to "
              f"{ks[-1]}" if np.isnan(pooled) else f"k* = {int(pooled)}")
    ci_text = (f"95% interval of k* over resamples that cross: [{np.percentile(found, 2.5):.0f}, "
               f"{np.percentile(found, 97.5):.0f}]" if len(found) else "no resample crosses")
    d.lines += [f"Pooled crossover (final vs base): {k_text}; {ci_text}; {100 * none_share:.0f}% of resamples "
                f"have no crossover. Per trajectory: " +
                ", ".join(f"seed {t.seed}: {'none' if np.isnan(k) else int(k)}" for t, k in zip(trajs, per_traj)) + ".",
                ""]
    d8 = (diff[0][ks.index(8)], diff[1][ks.index(8)], diff[2][ks.index(8)]) if 8 in ks else (math.nan,) * 3
    d_last = (diff[0][-1], diff[1][-1], diff[2][-1])
    finding = ("reproduced" if d8[1] > 0 and d_last[0] < 0 and not np.isnan(pooled) else
               "not reproduced" if d8[2] <= 0 or (np.isnan(pooled) and d_last[1] > 0) else
               "inconclusive")
    d.findings["crossover"] = finding
    d.numbers["crossover"] = {"pooled": None if np.isnan(pooled) else int(pooled),
                              "per_seed": [None if np.isnan(k) else int(k) for k in per_traj],
                              "no_crossover_share": none_share,
                              "final_minus_base_pass8": list(map(float, d8)),
                              f"final_minus_base_pass{ks[-1]}": list(map(float, d_last))}
    d.lines += [f"Finding 3 (trained ahead at pass@8, base overtakes at pass@{ks[-1]}): **{finding}** "
                f"(reproduced = final-minus-base interval at k=8 above 0, and base ahead at k={ks[-1]}).", ""]


# ---- per trajectory, and the collapse guard ----------------------------------------


def _trajectories_section(d: _Draft, per_traj: list[float]) -> None:
    d.lines += ["## Trajectories", "", "| seed | rounds | base pass@1 | final pass@1 | k* | guard |",
                "|---|---|---|---|---|---|"]
    for t, k in zip(d.trajs, per_traj):
        stop = next((e for e in reversed(t.events) if isinstance(e, ev.EarlyStop)), None)
        guard = f"stopped after round {stop.round}: {stop.reason}" if stop else "no early stop"
        p1 = {r: t.correct[r].sum() / (len(t.problems) * t.n_samples) for r in t.rounds}
        d.lines.append(f"| {t.seed} | {t.final} | {_pct(p1[0])}% | {_pct(p1[t.final])}% | "
                       f"{'none' if np.isnan(k) else int(k)} | {guard} |")
    d.lines += ["", "Run directories: " + ", ".join(f"`{t.run_dir}`" for t in d.trajs), ""]


def _manifest_section(d: _Draft) -> None:
    """What produced the trajectories: each run's manifest (runtime/manifest.py)."""
    from constellation.runtime.manifest import grouped_lines

    starts = {t.seed: next((e for e in reversed(t.events) if isinstance(e, ev.RunStart)), None) for t in d.trajs}
    d.lines += ["## Manifest", "", *grouped_lines({s: e.manifest if e else {} for s, e in starts.items()})]


def _draw_headroom(path: Path, points, trajs: list[Trajectory], sizes: list[int], n_boot: int) -> None:
    """The fitted line and its band (the line refitted on each resample)."""
    xs = np.linspace(min(p[1] for p in points), max(p[1] for p in points), 50)
    slope, intercept = fit_line(points)
    refits = [fit_line(round_points(trajs, plan)) for plan in resample_plans(sizes, n_boot, np.random.default_rng(2))]
    lines = np.array([b + a * xs for a, b in refits if np.isfinite(a)])
    band = tuple(np.percentile(lines, [2.5, 97.5], axis=0)) if len(lines) else None
    study_figures.gain_vs_headroom(path, points, xs, intercept + slope * xs if np.isfinite(slope) else None, band)


def _mean_gain(points: list[tuple[int, float, float]], r: int) -> float:
    gains = [g for rr, _, g in points if rr == r]
    return float(np.mean(gains)) if gains else math.nan


def _class_share(trajs: list[Trajectory], k: int, c: int) -> float:
    counts = sum(t.sel_count[r][k].sum(axis=0) for t in trajs for r in t.rounds if r >= 1 and k in t.sel_count[r])
    return float(counts[c] / counts[0]) if counts[0] else math.nan
