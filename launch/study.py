"""Run the trajectories of a study one after another, then write its report.

``constellation study --preset study --seeds 4`` runs seeds first_seed ..
first_seed + 3 of the preset (``run.seed`` set per trajectory, so the task
split, the base model, sampling and training all differ), each in
``<out>/runs/seed-<s>``. A finished trajectory (its run ended ok) is skipped
and an interrupted one resumes from its run store, so an interrupted study is
continued by running the same command again.

With ``controls`` on (the default) the study then runs the positive controls
of every finished seed (launch/control.py) in ``<out>/controls/seed-<s>``,
reusing the trajectory's base evaluation, and its report opens with them.
``constellation study --sweep KEY=V1,V2`` runs a whole study per value
(launch/study_sweep.py).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from typing import Any

from rich.console import Console

from constellation.protocol import config as config_mod
from constellation.protocol import events as ev
from constellation.runtime.store import read_events
from launch.control import DONE_FILE, control_report, run_control, seed_overrides
from launch.study_report import Report, StudyError, Trajectory, build_report, load_trajectory


def finished(run_dir: Path) -> bool:
    """The trajectory's run ended ok (no metrics.jsonl yet reads as no events)."""
    return any(isinstance(e, ev.RunEnd) and e.ok for e in read_events(run_dir))


def run_study(preset: str, seeds: int, overrides: list[str], out: Path, console: Console,
              first_seed: int = 0, n_boot: int = 1000, report_only: bool = False,
              parallel: int | None = None, controls: bool = True) -> Report:
    from launch.supervisor import Supervisor

    if seeds < 1:
        raise StudyError(f"--seeds must be >= 1, got {seeds}")
    if parallel is None:  # the preset's study.parallel
        parallel = config_mod.load(preset, overrides).study.parallel
    if parallel < 1:
        raise StudyError(f"--parallel must be >= 1, got {parallel}")
    out = out.resolve()
    runs = out / "runs"
    cfgs = {s: config_mod.load(preset, seed_overrides(overrides, s)) for s in range(first_seed, first_seed + seeds)}
    t_study = time.monotonic()
    if not report_only and parallel > 1:
        run_parallel(preset, overrides, list(cfgs), runs, parallel, console)
    elif not report_only:
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
    if parallel > 1 and not report_only and len(done) < seeds:
        failed = sorted(set(cfgs) - set(done))
        raise StudyError(f"trajectories {failed} did not finish; see {runs}/seed-<s>/console.log and logs/. "
                         f"Run the same command again to resume them.")
    if not done:
        raise StudyError(f"no finished trajectory under {runs}")
    if len(done) < seeds:
        console.print(f"[yellow]reporting on {len(done)} of {seeds} seeds (the others have not finished)[/yellow]")
    trajs = [load_trajectory(runs / f"seed-{s}", s, list(cfgs[s].eval.selection_ks)) for s in done]
    selection_k = cfgs[done[0]].eval.selection_k
    ctrl = run_seed_controls(cfgs, done, out, trajs, n_boot, console, report_only) if controls else None
    report = build_report(trajs, out, n_boot=n_boot, selection_k=selection_k, title=f"preset {preset}",
                          controls=ctrl)
    console.print(f"study: {len(done)} trajectories in {time.monotonic() - t_study:.0f}s; "
                  f"report: {out / 'report.md'}")
    for finding, verdict in report.findings.items():
        console.print(f"  {finding}: {verdict}")
    return report


def run_seed_controls(cfgs: dict[int, config_mod.Config], done: list[int], out: Path, trajs: list[Trajectory],
                      n_boot: int, console: Console, report_only: bool) -> Report | None:
    """The positive controls of each finished seed, on its trajectory's base
    evaluation (with ``report_only``: only those already run) -> their report
    section, or None when there is none."""
    ctrl = []
    for s in done:
        control_dir = out / "controls" / f"seed-{s}"
        if report_only and not (control_dir / DONE_FILE).exists():
            continue
        if not (control_dir / DONE_FILE).exists():
            console.rule(f"study: positive controls of seed {s}")
        ctrl.append(run_control(cfgs[s], control_dir, base_run=out / "runs" / f"seed-{s}", console=console))
    if not ctrl:
        return None
    return control_report(ctrl, cfgs[done[0]].eval.selection_k, n_boot, study=trajs)


def run_parallel(preset: str, overrides: list[str], seeds: list[int], runs: Path, parallel: int,
                 console: Console) -> None:
    """Up to ``parallel`` trajectories at once, each ``constellation up
    --run-dir runs/seed-<s>`` in its own process group of role processes,
    its console written to runs/seed-<s>/console.log. Every role uses its own
    configured threads (1 by default), so on 2 cores two trajectories run at
    close to full speed each: one is mostly generating or training while the
    other is too. A failed trajectory does not stop the others."""
    todo = [s for s in seeds if not finished(runs / f"seed-{s}")]
    for s in set(seeds) - set(todo):
        console.print(f"[dim]seed {s}: finished earlier, skipped[/dim]")
    running: dict[int, tuple[subprocess.Popen, Any, float]] = {}
    last_status = 0.0
    try:
        while todo or running:
            while todo and len(running) < parallel:
                s = todo.pop(0)
                run_dir = runs / f"seed-{s}"
                run_dir.mkdir(parents=True, exist_ok=True)
                cmd = [sys.executable, "-m", "launch.cli", "up", "--preset", preset, "--run-dir", str(run_dir)]
                for o in seed_overrides(overrides, s):
                    cmd += ["--set", o]
                log = open(run_dir / "console.log", "a")
                running[s] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log, time.monotonic())
                console.print(f"seed {s}: started (pid {running[s][0].pid}), console in {run_dir / 'console.log'}")
            for s, (proc, log, t0) in list(running.items()):
                if proc.poll() is not None:
                    log.close()
                    del running[s]
                    style = "green" if proc.returncode == 0 else "red"
                    console.print(f"[{style}]seed {s}: exit {proc.returncode} after "
                                  f"{time.monotonic() - t0:.0f}s[/{style}]")
            if time.monotonic() - last_status > 30 and running:
                last_status = time.monotonic()
                console.print("  ".join(f"seed {s}: {_stage(runs / f'seed-{s}')}" for s in running), highlight=False)
            time.sleep(0.5)
    finally:
        for proc, log, _ in running.values():  # interrupted: stop the children (they shut their roles down)
            proc.terminate()
        for proc, log, _ in running.values():
            proc.wait()
            log.close()


def _stage(run_dir: Path) -> str:
    """A few words on where a running trajectory is, from its metrics."""
    # read_events skips a missing file, a line being written and bad lines
    progress = next((e for e in reversed(read_events(run_dir)) if isinstance(e, ev.Progress)), None)
    if progress is None:
        return "building the base model"
    return f"round {progress.round} {progress.phase} {progress.done}/{progress.total}"
