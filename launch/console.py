"""What ``constellation up`` prints: the config, progress of long steps, one
line per finished evaluation or round, and the final pass@k table.

It only reads files: ``logs/prepare.log`` and ``metrics.jsonl``, which the
roles write, and the supervisor's ``status.json`` (``read_status``, which the
monitor uses too), so it works the same whichever process produced them.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from constellation.protocol import config as config_mod
from constellation.protocol import events as ev
from constellation.runtime.store import read_events

PROGRESS_PREFIX = "PROGRESS "  # launch.prepare writes "PROGRESS <fraction> <message>" lines
FIT_LINE_SECONDS = 10.0  # a training role's progress line at most this often
FIT_ROLES = ("trainer", "critic")  # roles whose heartbeats carry fit_step, fit_loss, ... (roles/step_log.py)


def fit_progress_text(role: str, stats: dict) -> str | None:
    """"trainer: step 40/120, loss 0.532, ETA 12s" from a role's heartbeat stats; None when it is not training."""
    step = stats.get("fit_step")
    if not isinstance(step, (int, float)) or not step:
        return None
    total, loss, eta = stats.get("fit_total") or 0, stats.get("fit_loss"), stats.get("fit_eta", -1)
    parts = [f"{role}: step {int(step)}" + (f"/{int(total)}" if total else "")]
    if isinstance(loss, (int, float)):
        parts.append(f"loss {loss:.3f}")
    if isinstance(eta, (int, float)) and eta >= 0:
        parts.append(f"ETA {eta:.0f}s")
    return ", ".join(parts)


def read_status(path: Path) -> dict[str, Any] | None:
    """status.json (the role table the supervisor rewrites), None when missing or not a JSON object."""
    try:
        status = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


class ConsoleView:
    def __init__(self, run_dir: Path, console: Console) -> None:
        self.run_dir, self.console = run_dir, console
        self._offset = 0  # bytes of metrics.jsonl already shown
        self._progress: Progress | None = None
        self._task = None
        self._phase = None
        self._fit_shown: dict[str, tuple[float, float]] = {}  # role -> (its step, when) last printed

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
        for line in chunk[:end].splitlines():
            try:
                event = ev.decode_event(line)
            except ev.BadEvent:
                continue  # the monitor counts bad lines; the console only shows what it can read
            self._show(event)
        self._show_fits()

    def _show_fits(self) -> None:
        """A line per training role every FIT_LINE_SECONDS while it trains, from
        the heartbeat stats the supervisor writes to status.json."""
        roles = (read_status(self.run_dir / "status.json") or {}).get("roles")
        now = time.monotonic()
        for role in FIT_ROLES:
            stats = (roles.get(role) or {}).get("stats") if isinstance(roles, dict) else None
            text = fit_progress_text(role, stats) if isinstance(stats, dict) else None
            step, when = self._fit_shown.get(role, (0.0, -FIT_LINE_SECONDS))
            if text is None or stats.get("fit_step") == step or now - when < FIT_LINE_SECONDS:
                continue
            self._fit_shown[role] = (stats.get("fit_step"), now)
            self._end_progress()
            self.console.print(f"[dim]{text}[/dim]", highlight=False)

    def _show(self, event: ev.Event) -> None:
        if isinstance(event, ev.Progress):
            self._show_progress(event)
            return
        self._end_progress()
        line = EVENT_LINES.get(type(event))
        if line is not None:
            self.console.print(line(event), highlight=False)

    def _show_progress(self, event: ev.Progress) -> None:
        key = (event.phase, event.round)
        if self._phase != key:
            self._end_progress()
            self._progress = self._new_progress()
            self._progress.start()
            self._task = self._progress.add_task(f"round {event.round} {event.phase}", total=event.total)
            self._phase = key
        self._progress.update(self._task, completed=event.done)

    def _end_progress(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress, self._phase = None, None

    def final_table(self) -> None:
        self._end_progress()
        self.console.print(pass_at_k_table(self.run_dir))


# -- one line (rich markup) per finished step; kinds not listed print nothing --------


def _eval_line(e: ev.Eval) -> str:
    p = e.pass_at_k
    shown = [k for k in ("1", "8", max(p, key=int, default="1")) if k in p]
    curve = "  ".join(f"pass@{k} {p[k]:.1%}" for k in dict.fromkeys(shown))
    sel = ", ".join(f"{k} {'n/a' if v is None else f'{v:.0%}'}" for k, v in e.selection_accuracy.items())
    return f"[bold]eval {e.model}[/bold]: {curve}  | selection@{e.selection_k}: {sel}"


def _zpd_line(e: ev.Zpd) -> str:
    return f"base pass@1 {e.pass_at_1:.1%}: [bold]{e.verdict}[/bold] (ZPD = {e.low:.0%}..{e.high:.0%})"


def _round_end_line(e: ev.RoundEnd) -> str:
    return (f"round {e.round}: {e.n_candidates} candidates, {e.n_visible_pass} visible-pass, "
            f"{e.n_train_examples} training examples, {e.seconds:.0f}s")


def _trainer_line(e: ev.Trainer) -> str:
    def metric(key: str) -> float:  # absent, or NaN written as null: shown as nan
        value = e.metrics.get(key)
        return float("nan") if value is None else value

    return (f"round {e.round} trainer: adapter v{e.version}, loss {metric('loss_first'):.3f}"
            f" -> {metric('loss_last'):.3f} in {e.metrics.get('seconds') or 0:.0f}s")


def _critic_line(e: ev.Critic) -> str:
    auroc = e.metrics.get("auroc")
    return f"round {e.round} critic: held-out AUROC {'n/a' if auroc is None else f'{auroc:.3f}'}"


def _crossover_line(e: ev.Crossover) -> str:
    k = e.k_star
    return f"round {e.round}: crossover k* = {k if k is not None else 'none (trained model ahead at every k)'}"


def _guard_line(e: ev.Guard) -> str:
    style = "bold red" if e.stop else "dim"
    return f"[{style}]round {e.round} guard: {e.reason}[/{style}]"


def _early_stop_line(e: ev.EarlyStop) -> str:
    return f"[bold red]early stop after round {e.round}: {e.reason}[/bold red]"


def _role_restart_line(e: ev.RoleRestart) -> str:
    return f"[yellow]{e.role} restarted; {e.resent} requests re-sent[/yellow]"


EVENT_LINES: dict[type[ev.Event], Callable[[Any], str]] = {
    ev.Eval: _eval_line, ev.Zpd: _zpd_line, ev.RoundEnd: _round_end_line, ev.Trainer: _trainer_line,
    ev.Critic: _critic_line, ev.Crossover: _crossover_line, ev.Guard: _guard_line,
    ev.EarlyStop: _early_stop_line, ev.RoleRestart: _role_restart_line,
}


def manifest_lines(run_dir: Path) -> list[str]:
    """The newest run_start's manifest in a few lines (runtime/manifest.py)."""
    from constellation.runtime.manifest import summary_lines

    starts = [e for e in read_events(run_dir) if isinstance(e, ev.RunStart)]
    return summary_lines(starts[-1].manifest if starts else {})


def pass_at_k_table(run_dir: Path) -> Table:
    events = read_events(run_dir)
    evals = [e for e in events if isinstance(e, ev.Eval)]
    cross = {e.round: e.k_star for e in events if isinstance(e, ev.Crossover)}
    ks = list(evals[0].pass_at_k) if evals else []
    table = Table(title=f"pass@k by round ({run_dir.name}); columns are k")
    table.add_column("model", no_wrap=True)
    for k in ks:
        table.add_column(f"@{k}", justify="right", no_wrap=True)
    table.add_column("k*", justify="right")
    for e in evals:
        k_star = cross.get(e.round, "")
        table.add_row(e.model, *(f"{e.pass_at_k[k]:.1%}" if k in e.pass_at_k else "-" for k in ks),
                      "-" if e.round == 0 else ("none" if k_star is None else str(k_star)))
    return table
