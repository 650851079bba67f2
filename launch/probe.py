"""`constellation probe`: is the task in the base model's zone of proximal development?

Self-training needs a base that solves some problems but not all: below the
zone (pass@1 < eval.zpd_low, 25% by default) there is almost nothing correct
to train on; above it (pass@1 > eval.zpd_high, 75%) little is left to learn.
The probe builds (or reuses from the cache) the preset's base model exactly as
``constellation up`` would, and runs one phase of the real coordinator over the
configured generator and verifier in this process (launch/inprocess.py, no
sockets): ``samples`` candidates for each of ``n_problems`` evaluation
problems. It prints held-out
pass@1 with a bootstrap 95% interval over problems, per difficulty too, and
the verdict below / in / above the zone.

It also says whether a critic could matter on this task: the share of
problems whose visible-pass candidates disagree on held-out inputs (at least
two distinct held-out output vectors among a group of DISAGREE_K samples;
selection can only beat best-of-k there), visible-pass precision (how often a
candidate that reproduces the visible examples is also right on held-out
ones), and, when the task module offers ``open_alternative(problem)`` (the
DSL does), the task-level ambiguity with no model involved: the share of
problems whose visible examples some other program of the same depth fits
while differing on held-out inputs. The task bounds what the model can
disagree on; the model's diversity decides how much of it shows.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from constellation.algorithms.bootstrap import bootstrap
from constellation.algorithms.selection import DISAGREE, Sample, disagreement_class
from constellation.protocol.config import Config
from constellation.runtime.registry import resolve_task
from constellation.runtime.store import load_split
from launch.inprocess import in_process

DISAGREE_K = 8  # group size at which disagreement is counted (the study's default k)
Interval = tuple[float, float]


@dataclass
class ProbeResult:
    pass_at_1: float
    ci: tuple[float, float]
    zone: str  # "below" | "in" | "above"
    n_problems: int
    samples: int
    visible_pass_at_1: float
    by_difficulty: dict[int, float]
    seconds: float
    disagree_share: float = float("nan")  # problems whose visible-pass candidates disagree (groups of DISAGREE_K)
    disagree_ci: Interval = (float("nan"), float("nan"))
    visible_precision: float = float("nan")  # held-out correct among visible-pass candidates
    visible_precision_ci: Interval = (float("nan"), float("nan"))
    ambiguous_share: float | None = None  # task-level: problems a same-depth program leaves open; None = task cannot say
    ambiguous_ci: Interval | None = None


def zone_of(p1: float, low: float, high: float) -> str:
    return "below" if p1 < low else "above" if p1 > high else "in"


def _interval(values: np.ndarray, weights: np.ndarray | None = None) -> tuple[float, Interval]:
    """Mean over problems (weighted: a ratio of sums) with a bootstrap 95% interval over problems."""
    w = np.ones(len(values)) if weights is None else weights

    def stat(plan):
        i = plan[0][1]
        return (values[i] * w[i]).sum() / w[i].sum() if w[i].sum() else float("nan")
    est, lo, hi = bootstrap(stat, [len(values)], 1000)
    return float(est), (float(lo), float(hi))


def disagree_fraction(pool: list[Sample], k: int = DISAGREE_K) -> float:
    """Share of the pool's groups of k samples (in sampling order; the whole pool if it
    has fewer than k) whose visible-pass candidates disagree on held-out inputs."""
    groups = [pool[i:i + k] for i in range(0, len(pool) - k + 1, k)] or [pool]
    return sum(disagreement_class(g) == DISAGREE for g in groups) / len(groups)


def ambiguity_fields(cfg: Config, problems: list, pools: dict[str, list[Sample]]) -> dict:
    """ProbeResult's disagreement, precision and task-level ambiguity fields."""
    disagree = np.array([disagree_fraction(pools[p.id]) for p in problems])
    passing = np.array([sum(s.visible_pass for s in pools[p.id]) for p in problems], dtype=float)
    right = np.array([sum(s.visible_pass and s.heldout_correct for s in pools[p.id]) for p in problems], dtype=float)
    precision = np.divide(right, passing, out=np.zeros_like(right), where=passing > 0)
    fields = dict(zip(("disagree_share", "disagree_ci"), _interval(disagree)))
    fields.update(zip(("visible_precision", "visible_precision_ci"), _interval(precision, passing)))
    open_alternative = getattr(resolve_task(cfg.task.impl), "open_alternative", None)
    if callable(open_alternative):
        ambiguous = np.array([open_alternative(p) is not None for p in problems], dtype=float)
        fields.update(zip(("ambiguous_share", "ambiguous_ci"), _interval(ambiguous)))
    return fields


def probe(cfg: Config, n_problems: int = 100, samples: int = 8, console: Console | None = None,
          split: Any = None) -> ProbeResult:
    """``split``: the task's split when the caller made it already (its preflight)."""
    console = console or Console()
    if n_problems < 1 or samples < 1:
        raise ValueError(f"probe needs problems >= 1 and samples >= 1, got {n_problems} and {samples}")
    t0 = time.monotonic()

    def progress(fraction: float, message: str) -> None:
        console.print(f"[dim]{100 * fraction:5.1f}% {message}[/dim]", highlight=False)

    with tempfile.TemporaryDirectory() as tmp, in_process(cfg, Path(tmp), roles=("generator", "verifier"),
                                                          progress=progress, split=split) as coordinator:
        base = (Path(tmp) / "base_model.txt").read_text()
        split = load_split(tmp)
        problems = random.Random(cfg.run.seed).sample(split.eval, min(n_problems, len(split.eval)))
        pools = coordinator.sample("probe", 0, problems, samples).pools()
    pools = {p.id: pools.get(p.id, []) for p in problems}  # every problem, in sampled order
    by_id = {p.id: p for p in problems}
    correct = np.array([sum(s.heldout_correct for s in pool) / samples for pool in pools.values()])
    visible = [sum(s.visible_pass for s in pool) / samples for pool in pools.values()]
    by_diff: dict[int, list[float]] = defaultdict(list)
    for pid, c in zip(pools, correct):
        by_diff[by_id[pid].difficulty].append(float(c))
    est, lo, hi = bootstrap(lambda plan: correct[plan[0][1]].mean(), [len(correct)], 1000)
    e = cfg.eval
    result = ProbeResult(float(est), (float(lo), float(hi)), zone_of(float(est), e.zpd_low, e.zpd_high),
                         len(problems), samples, float(np.mean(visible)),
                         {d: float(np.mean(v)) for d, v in sorted(by_diff.items())}, time.monotonic() - t0,
                         **ambiguity_fields(cfg, problems, pools))
    show(result, base, {d: len(v) for d, v in by_diff.items()}, cfg, console)
    return result


def show(result: ProbeResult, base: str, n_by_difficulty: dict[int, int], cfg: Config, console: Console) -> None:
    console.print(f"base model: {base}", highlight=False)
    table = Table(title=f"ZPD probe: {result.n_problems} eval problems x {result.samples} samples")
    for col in ("difficulty", "problems", "held-out pass@1"):
        table.add_column(col)
    for d, v in result.by_difficulty.items():
        table.add_row(str(d), str(n_by_difficulty[d]), f"{100 * v:.1f}%")
    est, (lo, hi) = result.pass_at_1, result.ci
    table.add_row("all", str(result.n_problems), f"{100 * est:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]")
    console.print(table)
    words = {"below": "BELOW the zone: too hard, little to train on",
             "in": "IN the zone: self-training has material and headroom",
             "above": "ABOVE the zone: too easy, little headroom"}
    e = cfg.eval
    console.print(f"base pass@1 {100 * est:.1f}% (95% CI {100 * lo:.1f}-{100 * hi:.1f}; visible-pass "
                  f"{100 * result.visible_pass_at_1:.1f}%), zone {100 * e.zpd_low:.0f}%-{100 * e.zpd_high:.0f}%: "
                  f"{words[result.zone]} ({result.seconds:.0f}s)")
    if result.zone != "in":
        console.print(f"what to change: {ADVICE[result.zone]}", highlight=False)
    show_ambiguity(result, cfg, console)


ADVICE = {
    "below": ("easier problems (task.depths / the task file's levels; the probe's table shows pass@1 per "
              "difficulty), a prompt_format that states the answer format the extract rule reads, more "
              "sampling.max_new_tokens if completions are cut off, another sampling.temperature, or a "
              "larger base (task.n_labeled warm-starts only model.base = \"tiny\")"),
    "above": "harder problems (task.depths / the task file's levels) or a smaller base",
}


def _pct(est: float, ci: Interval) -> str:
    return f"{100 * est:.1f}% (95% CI {100 * ci[0]:.1f}-{100 * ci[1]:.1f})"


def show_ambiguity(result: ProbeResult, cfg: Config, console: Console) -> None:
    k = min(DISAGREE_K, result.samples)
    console.print(f"visible-pass candidates disagree on held-out inputs (k = {k}) in "
                  f"{_pct(result.disagree_share, result.disagree_ci)} of problems; visible-pass precision "
                  f"{_pct(result.visible_precision, result.visible_precision_ci)}", highlight=False)
    if result.ambiguous_share is not None:
        console.print(f"task-level ambiguity (no model: a same-depth program fits the visible examples and "
                      f"differs on held-out inputs): {_pct(result.ambiguous_share, result.ambiguous_ci)} "
                      f"[task.visible_mode={cfg.task.visible_mode}, n_visible={cfg.task.n_visible}]",
                      highlight=False)
