"""What ``constellation up`` prints: the config, progress of long steps, one
line per finished evaluation or round, and the final pass@k table.

It only reads files the roles write (``logs/prepare.log``, ``metrics.jsonl``),
so it works the same whichever process produced them.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from constellation.protocol import config as config_mod
from constellation.runtime.store import read_events

PROGRESS_PREFIX = "PROGRESS "  # launch.prepare writes "PROGRESS <fraction> <message>" lines


class ConsoleView:
    def __init__(self, run_dir: Path, console: Console) -> None:
        self.run_dir, self.console = run_dir, console
        self._offset = 0  # bytes of metrics.jsonl already shown
        self._progress: Progress | None = None
        self._task = None
        self._phase = None

    def header(self, cfg: config_mod.Config) -> None:
        self.console.rule(f"constellation run {self.run_dir.name}")
        self.console.print(f"run directory: {self.run_dir}")
        self.console.print(config_mod.to_toml(cfg), style="dim", highlight=False, markup=False)

    # -- base model preparation -------------------------------------------
    def follow_prepare(self, proc: subprocess.Popen, log_path: Path, interrupted: Callable[[], bool]) -> None:
        with self._new_progress() as progress:
            task = progress.add_task("base model", total=1.0)
            offset = 0
            while True:
                done = proc.poll() is not None
                if interrupted():
                    proc.terminate()
                    proc.wait()
                    raise KeyboardInterrupt
                text = log_path.read_text(errors="replace") if log_path.exists() else ""
                for line in text[offset:].splitlines():
                    if line.startswith(PROGRESS_PREFIX):
                        frac, _, msg = line[len(PROGRESS_PREFIX):].partition(" ")
                        progress.update(task, completed=float(frac), description=msg[:60] or "base model")
                    elif line.startswith("INFO "):
                        self.console.print(line[5:], highlight=False)
                offset = len(text)
                if done:
                    return
                time.sleep(0.3)

    # -- the run ----------------------------------------------------------
    def _new_progress(self) -> Progress:
        return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f}"),
                        TimeElapsedColumn(), console=self.console, transient=True)

    def poll(self) -> None:
        path = self.run_dir / "metrics.jsonl"
        if not path.exists():
            return
        with open(path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1  # only whole lines
        self._offset += end
        for line in chunk[:end].decode(errors="replace").splitlines():
            try:
                self._show(json.loads(line))
            except json.JSONDecodeError:
                continue

    def _show(self, ev: dict) -> None:
        kind, r = ev.get("event"), ev.get("round")
        if kind == "progress":
            key = (ev["phase"], r)
            if self._phase != key:
                self._end_progress()
                self._progress = self._new_progress()
                self._progress.start()
                self._task = self._progress.add_task(f"round {r} {ev['phase']}", total=ev["total"])
                self._phase = key
            self._progress.update(self._task, completed=ev["done"])
            return
        self._end_progress()
        if kind == "eval":
            p = ev["pass_at_k"]
            shown = [k for k in ("1", "8", max(p, key=int)) if k in p]
            curve = "  ".join(f"pass@{k} {p[k]:.1%}" for k in dict.fromkeys(shown))
            sel = ", ".join(f"{k} {v:.0%}" for k, v in ev.get("selection_accuracy", {}).items())
            self.console.print(f"[bold]eval {ev['model']}[/bold]: {curve}  | selection@{ev['selection_k']}: {sel}",
                               highlight=False)
        elif kind == "zpd":
            self.console.print(f"base pass@1 {ev['pass_at_1']:.1%}: [bold]{ev['verdict']}[/bold] "
                               f"(ZPD = {ev['low']:.0%}..{ev['high']:.0%})")
        elif kind == "round_end":
            self.console.print(f"round {r}: {ev['n_candidates']} candidates, {ev['n_visible_pass']} visible-pass, "
                               f"{ev['n_train_examples']} training examples, {ev['seconds']:.0f}s")
        elif kind == "trainer":
            self.console.print(f"round {r} trainer: adapter v{ev['version']}, loss {ev.get('loss_first', float('nan')):.3f}"
                               f" -> {ev.get('loss_last', float('nan')):.3f} in {ev.get('seconds', 0):.0f}s")
        elif kind == "critic":
            auroc = ev.get("auroc")
            self.console.print(f"round {r} critic: held-out AUROC {'n/a' if auroc is None else f'{auroc:.3f}'}")
        elif kind == "crossover":
            k = ev["k_star"]
            self.console.print(f"round {r}: crossover k* = {k if k is not None else 'none (trained model ahead at every k)'}")
        elif kind == "guard":
            style = "bold red" if ev.get("stop") else "dim"
            self.console.print(f"[{style}]round {r} guard: {ev['reason']}[/{style}]", highlight=False)
        elif kind == "early_stop":
            self.console.print(f"[bold red]early stop after round {r}: {ev['reason']}[/bold red]", highlight=False)
        elif kind == "role_restart":
            self.console.print(f"[yellow]{ev['role']} restarted; {ev['resent']} requests re-sent[/yellow]")

    def _end_progress(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress, self._phase = None, None

    def final_table(self) -> None:
        self._end_progress()
        self.console.print(pass_at_k_table(self.run_dir))


def pass_at_k_table(run_dir: Path) -> Table:
    events = read_events(run_dir)
    evals = [e for e in events if e["event"] == "eval"]
    cross = {e["round"]: e["k_star"] for e in events if e["event"] == "crossover"}
    ks = list(evals[0]["pass_at_k"]) if evals else []
    table = Table(title=f"pass@k by round ({run_dir.name}); columns are k")
    table.add_column("model", no_wrap=True)
    for k in ks:
        table.add_column(f"@{k}", justify="right", no_wrap=True)
    table.add_column("k*", justify="right")
    for e in evals:
        k_star = cross.get(e["round"], "")
        table.add_row(e["model"], *(f"{e['pass_at_k'][k]:.1%}" for k in ks),
                      "-" if e["round"] == 0 else ("none" if k_star is None else str(k_star)))
    return table
