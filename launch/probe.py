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
"""

from __future__ import annotations

import random
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from constellation.protocol.config import Config
from constellation.runtime.store import load_split
from launch.inprocess import in_process
from constellation.algorithms.bootstrap import bootstrap


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


def zone_of(p1: float, low: float, high: float) -> str:
    return "below" if p1 < low else "above" if p1 > high else "in"


def probe(cfg: Config, n_problems: int = 100, samples: int = 8, console: Console | None = None) -> ProbeResult:
    console = console or Console()
    if n_problems < 1 or samples < 1:
        raise ValueError(f"probe needs problems >= 1 and samples >= 1, got {n_problems} and {samples}")
    t0 = time.monotonic()

    def progress(fraction: float, message: str) -> None:
        console.print(f"[dim]{100 * fraction:5.1f}% {message}[/dim]", highlight=False)

    with tempfile.TemporaryDirectory() as tmp, \
            in_process(cfg, Path(tmp), roles=("generator", "verifier"), progress=progress) as coordinator:
        base = (Path(tmp) / "base_model.txt").read_text()
        split = load_split(tmp)
        problems = random.Random(cfg.run.seed).sample(split.eval, min(n_problems, len(split.eval)))
        pools = coordinator.sample("probe", 0, problems, samples).pools()
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
                         {d: float(np.mean(v)) for d, v in sorted(by_diff.items())}, time.monotonic() - t0)
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
