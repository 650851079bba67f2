"""Run the trajectories of a study one after another, then write its report.

``constellation study --preset study --seeds 4`` runs seeds first_seed ..
first_seed + 3 of the preset (``run.seed`` set per trajectory, so the task
split, the base model, sampling and training all differ), each in
``<out>/runs/seed-<s>``. A finished trajectory (its run ended ok) is skipped
and an interrupted one resumes from its run store, so an interrupted study is
continued by running the same command again.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from constellation import config as config_mod
from constellation.store import read_events
from constellation.study import Report, StudyError, build_report, load_trajectory


def finished(run_dir: Path) -> bool:
    if not (run_dir / "metrics.jsonl").exists():
        return False
    return any(e.get("event") == "run_end" and e.get("ok") for e in read_events(run_dir))


def run_study(preset: str, seeds: int, overrides: list[str], out: Path, console: Console,
              first_seed: int = 0, n_boot: int = 1000, report_only: bool = False) -> Report:
    from launch.supervisor import Supervisor

    if seeds < 1:
        raise StudyError(f"--seeds must be >= 1, got {seeds}")
    out = out.resolve()
    runs = out / "runs"
    cfgs = {s: config_mod.load(preset, [*overrides, f"run.seed={s}", f"run.name=seed-{s}"])
            for s in range(first_seed, first_seed + seeds)}
    t_study = time.monotonic()
    if not report_only:
        for s, cfg in cfgs.items():
            run_dir = runs / f"seed-{s}"
            if finished(run_dir):
                console.print(f"[dim]seed {s}: finished earlier ({run_dir}), skipped[/dim]")
                continue
            for sub in ("logs", "adapters"):
                (run_dir / sub).mkdir(parents=True, exist_ok=True)
            console.rule(f"study: seed {s} ({list(cfgs).index(s) + 1} of {seeds})")
            t0 = time.monotonic()
            code = Supervisor(cfg, run_dir, console).run()
            console.print(f"seed {s}: exit {code} after {time.monotonic() - t0:.0f}s")
            if code != 0:
                raise StudyError(f"trajectory seed {s} failed (exit {code}); see {run_dir / 'logs'}. "
                                 f"Run the same command again to resume it.")
    done = [s for s in cfgs if finished(runs / f"seed-{s}")]
    if not done:
        raise StudyError(f"no finished trajectory under {runs}")
    if len(done) < seeds:
        console.print(f"[yellow]reporting on {len(done)} of {seeds} seeds (the others have not finished)[/yellow]")
    trajs = [load_trajectory(runs / f"seed-{s}", s, list(cfgs[s].eval.selection_ks)) for s in done]
    report = build_report(trajs, out, n_boot=n_boot, selection_k=cfgs[done[0]].eval.selection_k,
                          title=f"preset {preset}")
    console.print(f"study: {len(done)} trajectories in {time.monotonic() - t_study:.0f}s; "
                  f"report: {out / 'report.md'}")
    for finding, verdict in report.findings.items():
        console.print(f"  {finding}: {verdict}")
    return report
