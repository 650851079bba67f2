"""`constellation probe`: is the task in the base model's zone of proximal development?

Self-training needs a base that solves some problems but not all: below the
zone (pass@1 < eval.zpd_low, 25% by default) there is almost nothing correct
to train on; above it (pass@1 > eval.zpd_high, 75%) little is left to learn.
The probe builds (or reuses from the cache) the preset's base model exactly as
``constellation up`` would, samples ``samples`` candidates for each of
``n_problems`` evaluation problems through the configured generator and
verifier role classes (in this process, no sockets), and prints held-out
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

from constellation.protocol import messages as m
from constellation.protocol.config import Config
from constellation.runtime.registry import resolve_role, resolve_task
from launch.study_report import bootstrap


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


def probe(cfg: Config, n_problems: int = 100, samples: int = 8, console: Console | None = None,
          chunk: int = 8) -> ProbeResult:
    from constellation.models.base_model import ensure_base_model

    console = console or Console()
    if n_problems < 1 or samples < 1:
        raise ValueError(f"probe needs problems >= 1 and samples >= 1, got {n_problems} and {samples}")
    t0 = time.monotonic()
    split = resolve_task(cfg.task.impl).make_split(cfg.task, cfg.task_seed())
    problems = random.Random(cfg.run.seed).sample(split.eval, min(n_problems, len(split.eval)))

    def progress(fraction: float, message: str) -> None:
        console.print(f"[dim]{100 * fraction:5.1f}% {message}[/dim]", highlight=False)

    base = ensure_base_model(cfg.model, cfg.task, cfg.task_seed(), split.labeled, progress=progress)
    correct, visible, difficulty = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "base_model.txt").write_text(str(base))
        generator = resolve_role("generator", cfg.generator.impl)(cfg, Path(tmp))
        verifier = resolve_role("verifier", cfg.verifier.impl)(cfg, Path(tmp))
        generator.setup()
        verifier.setup()
        s = cfg.sampling
        for i in range(0, len(problems), chunk):
            batch = problems[i:i + chunk]
            reply = generator.handle(m.GenerateRequest(
                request_id=f"probe-{i}", problems=batch, k=samples,
                sampling=m.Sampling(temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
                                    seed=cfg.run.seed * 7919 + i),
                adapter_version=0, candidate_prefix="probe/0"))
            by_problem = defaultdict(list)
            for c in reply.items:
                by_problem[c.problem_id].append(c)
            for p in batch:
                verdicts = verifier.handle(m.VerifyRequest(request_id=f"probe-v-{p.id}", problem=p,
                                                           candidates=by_problem[p.id])).items
                correct.append(sum(bool(v.heldout_correct) for v in verdicts) / samples)
                visible.append(sum(v.status == "pass" for v in verdicts) / samples)
                difficulty.append(p.difficulty)
            console.print(f"[dim]probe: {min(i + chunk, len(problems))}/{len(problems)} problems[/dim]")
    per_problem = np.array(correct)
    est, lo, hi = bootstrap(lambda plan: per_problem[plan[0][1]].mean(), [len(per_problem)], 1000)
    by_diff: dict[int, list[float]] = defaultdict(list)
    for d, c in zip(difficulty, correct):
        by_diff[d].append(c)
    e = cfg.eval
    result = ProbeResult(float(est), (float(lo), float(hi)), zone_of(float(est), e.zpd_low, e.zpd_high),
                         len(problems), samples, float(np.mean(visible)),
                         {d: float(np.mean(v)) for d, v in sorted(by_diff.items())}, time.monotonic() - t0)
    console.print(f"base model: {base}", highlight=False)
    table = Table(title=f"ZPD probe: {result.n_problems} eval problems x {samples} samples")
    for col in ("difficulty", "problems", "held-out pass@1"):
        table.add_column(col)
    for d, v in result.by_difficulty.items():
        table.add_row(str(d), str(len(by_diff[d])), f"{100 * v:.1f}%")
    table.add_row("all", str(result.n_problems), f"{100 * est:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]")
    console.print(table)
    words = {"below": "BELOW the zone: too hard, little to train on",
             "in": "IN the zone: self-training has material and headroom",
             "above": "ABOVE the zone: too easy, little headroom"}
    console.print(f"base pass@1 {100 * est:.1f}% (95% CI {100 * lo:.1f}-{100 * hi:.1f}; visible-pass "
                  f"{100 * result.visible_pass_at_1:.1f}%), zone {100 * e.zpd_low:.0f}%-{100 * e.zpd_high:.0f}%: "
                  f"{words[result.zone]} ({result.seconds:.0f}s)")
    return result
