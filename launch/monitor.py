"""Live terminal view of a run directory: ``constellation monitor RUN_DIR``.

Reads only files, so it can watch a run from another terminal (or after the
fact) and never talks to the processes:

  RUN_DIR/metrics.jsonl  one event per line, appended by the coordinator
                         (the structs of constellation/protocol/events.py)
  RUN_DIR/status.json    role table, rewritten atomically by the supervisor

Both are written while we read, so a half-written last line, a missing file or
a field of the wrong type is shown as missing data, never an exception: an
event line that does not decode is counted as bad (and its count shown), and
status.json is read as untyped JSON that every formatter below tolerates. ``render`` is pure (files in, renderable out) so tests can
print a frame into a string; ``monitor`` only repeats it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from constellation.algorithms.passk import crossover
from constellation.protocol import events as ev
from constellation.runtime.store import read_event_lines
from launch.console import FIT_ROLES, fit_progress_text, read_status

# a heartbeat older than this (seconds) is flagged; roles beat about every second
STALE_HEARTBEAT_SECONDS = 10.0
BAR_WIDTH = 16
SELECTION_POLICIES = ("best_of_k", "critic", "majority", "critic_vote", "oracle")

E = TypeVar("E", bound=ev.Event)


# --------------------------------------------------------------------------
# Reading the files
# --------------------------------------------------------------------------


@dataclass
class RunState:
    run_dir: Path
    events: list[ev.Event]  # metrics.jsonl events in file order
    bad_lines: int  # unreadable lines other than a half-written last one
    status: dict[str, Any] | None  # status.json, None if missing or unreadable

    def last(self, kind: type[E]) -> E | None:
        return next((e for e in reversed(self.events) if isinstance(e, kind)), None)

    def all(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    @property
    def ended(self) -> bool:
        return self.last(ev.RunEnd) is not None


def load(run_dir: Path) -> RunState:
    run_dir = Path(run_dir)
    events, bad = read_event_lines(run_dir / "metrics.jsonl")
    return RunState(run_dir, events, bad, read_status(run_dir / "status.json"))


# --------------------------------------------------------------------------
# Formatting helpers (all tolerate junk values)
# --------------------------------------------------------------------------


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) else float(value)


def _fmt(value: Any, digits: int = 3) -> str:
    x = _num(value)
    if x is None:
        return "-"
    return str(int(x)) if isinstance(value, int) else f"{x:.{digits}f}"


def _duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "-"
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{seconds:.1f}s"


def _bar(value: float | None, width: int = BAR_WIDTH) -> str:
    """A value in [0, 1] as a bar of ``width`` cells with 1/8-cell resolution."""
    if value is None:
        return ""
    eighths = round(min(max(value, 0.0), 1.0) * width * 8)
    full, rest = divmod(eighths, 8)
    return "█" * full + ("" if rest == 0 else " ▏▎▍▌▋▊▉"[rest])


def _curve(event: ev.Eval | None) -> dict[int, float]:
    """pass@k of an eval event with int keys (JSON keys are strings)."""
    if event is None:
        return {}
    return {int(k): v for k, v in event.pass_at_k.items() if k.isdigit() and _num(v) is not None}


def _round_key(event: ev.Event) -> int:
    return -1 if event.round is None else event.round


# --------------------------------------------------------------------------
# View sections
# --------------------------------------------------------------------------


def _header(state: RunState, now: float) -> Text:
    """State first, path last: a long path may wrap without hiding the rest."""
    start, end = state.last(ev.RunStart), state.last(ev.RunEnd)
    text = Text()
    text.append("constellation  ", style="bold")
    if end is not None:
        ok = end.ok
        text.append("finished ok" if ok else "finished FAILED",
                    style="bold green" if ok else "bold red")
    elif not state.events:
        text.append("waiting for metrics.jsonl", style="yellow")
    else:
        text.append("running", style="bold cyan")
    if start is not None:
        text.append(f"  seed {start.seed}, {start.rounds} rounds" + (", resumed" if start.resumed else ""))
        text.append(f"  elapsed {_duration((end.time if end else now) - start.time)}")
    if state.bad_lines:
        text.append(f"  ({state.bad_lines} unreadable lines in metrics.jsonl)", style="red")
    text.append(f"  {state.run_dir}", style="dim")
    return text


def _last_eval(state: RunState, base: bool) -> ev.Eval | None:
    """The newest evaluation of the base model (``base``) or of a trained round."""
    return next((e for e in reversed(state.all(ev.Eval)) if (e.model == "base") == base), None)


def _passk_section(state: RunState) -> RenderableType:
    latest_event = _last_eval(state, base=False)
    base, latest = _curve(_last_eval(state, base=True)), _curve(latest_event)
    latest_name = latest_event.model if latest_event else "latest"
    table = Table(title=f"pass@k: base vs {latest_name}", title_justify="left", expand=False)
    table.add_column("k", justify="right")
    table.add_column("base", justify="right")
    table.add_column(latest_name, justify="right")
    table.add_column("Δ", justify="right")
    table.add_column("base", style="blue", no_wrap=True, min_width=BAR_WIDTH)
    table.add_column(latest_name, style="magenta", no_wrap=True, min_width=BAR_WIDTH)
    for k in sorted(set(base) | set(latest)):
        b, t = base.get(k), latest.get(k)
        if b is not None and t is not None:
            d = t - b
            delta = Text(f"{d:+.3f}", style="green" if d > 0 else "red" if d < 0 else "")
        else:
            delta = Text("-")
        table.add_row(str(k), _fmt(b), _fmt(t), delta, _bar(b), _bar(t))
    if not base and not latest:
        table.add_row("-", "-", "-", "-", "no eval yet", "")
    return Group(table, _crossover_line(state, base, latest))


def _crossover_line(state: RunState, base: dict[int, float], latest: dict[int, float]) -> Text:
    event = state.last(ev.Crossover)
    if event is not None:
        k_star, source = event.k_star, f"round {event.round}"
    elif base and latest:
        k_star, source = crossover(base, latest), "computed from the curves above"
    else:
        return Text("k* (crossover): not yet", style="dim")
    if k_star is None:
        return Text(f"k* (crossover): none, trained model ahead at every k ({source})",
                    style="bold green")
    return Text(f"k* (crossover): {k_star}, base as good from k={k_star} on ({source})",
                style="bold yellow")


def _rounds_section(state: RunState) -> RenderableType:
    evals: dict[tuple[int, str], ev.Eval] = {}
    for e in state.all(ev.Eval):  # a repeated (round, model) keeps the last
        evals[(_round_key(e), e.model)] = e
    k_star = {_round_key(e): e.k_star for e in state.all(ev.Crossover)}
    first = next(iter(evals.values()), None)
    sel_k = first.selection_k if first else None
    title = "evaluation per round" + (f" (selection accuracy at k={sel_k})" if sel_k else "")
    table = Table(title=title, title_justify="left")
    for name in ("round", "model", "pass@1", "pass@8"):
        table.add_column(name, justify="right")
    for policy in SELECTION_POLICIES:
        table.add_column(policy.replace("_", " "), justify="right")
    table.add_column("k*", justify="right")
    for (r, model), e in sorted(evals.items(), key=lambda item: item[0]):
        curve = _curve(e)
        table.add_row(str(r), model, _fmt(curve.get(1)), _fmt(curve.get(8)),
                      *(_fmt(e.selection_accuracy.get(p)) for p in SELECTION_POLICIES),
                      "" if model == "base" else _fmt(k_star.get(r)))
    return table


def _training_section(state: RunState) -> RenderableType | None:
    by_round: dict[int, dict[type[ev.Event], ev.Event]] = {}
    for kind in (ev.RoundEnd, ev.Trainer, ev.Critic):
        for e in state.all(kind):
            by_round.setdefault(_round_key(e), {})[kind] = e
    if not by_round:
        return None
    table = Table(title="training per round", title_justify="left")
    for name in ("round", "candidates", "visible pass", "train ex", "loss first→last",
                 "train s", "critic auroc", "critic ece", "round s"):
        table.add_column(name, justify="right")
    for r in sorted(by_round):
        end, trainer, critic = (by_round[r].get(kind) for kind in (ev.RoundEnd, ev.Trainer, ev.Critic))
        losses = trainer.metrics if trainer else {}
        scores = critic.metrics if critic else {}
        counts = (end.n_candidates, end.n_visible_pass, end.n_train_examples) if end else (None,) * 3
        loss = f"{_fmt(losses.get('loss_first'))}→{_fmt(losses.get('loss_last'))}" if trainer else "-"
        table.add_row(str(r), *map(_fmt, counts), loss, _fmt(losses.get("seconds"), 1),
                      _fmt(scores.get("auroc")), _fmt(scores.get("ece")), _fmt(end.seconds if end else None, 1))
    return table


def _throughput(stats: Any) -> str:
    if not isinstance(stats, dict):
        return "-"
    # roles report "per_second" (items per busy second) and "done" (items so far)
    if "per_second" in stats:
        return f"{_fmt(stats['per_second'], 1)}/s, {_fmt(stats.get('done'), 0)} done"
    return ", ".join(f"{k}={_fmt(v, 0)}" for k, v in list(stats.items())[:2]) or "-"


def _roles_section(state: RunState, now: float) -> RenderableType:
    status = state.status
    if status is None:
        return Text("roles: no status.json yet", style="dim")
    live = not state.ended  # after run_end every heartbeat is old on purpose
    updated = _num(status.get("updated"))
    title = "roles"
    if updated is not None:
        title += f" (status {_duration(now - updated)} old)"
    table = Table(title=title, title_justify="left")
    for name in ("role", "pid", "state", "restarts", "queue", "throughput", "heartbeat"):
        table.add_column(name, justify="left" if name in ("role", "state", "throughput") else "right")
    roles = status.get("roles") if isinstance(status.get("roles"), dict) else {}
    for name, info in roles.items():
        info = info if isinstance(info, dict) else {}
        beat = _num(info.get("last_heartbeat"))
        age = None if beat is None else now - beat
        if age is None:
            heartbeat = Text("never", style="yellow" if live else "")
        elif live and age > STALE_HEARTBEAT_SECONDS:
            heartbeat = Text(f"{_duration(age)} STALE", style="bold red")
        else:
            heartbeat = Text(f"{_duration(age)} ago")
        role_state = str(info.get("state", "-"))
        state_style = {"busy": "cyan", "idle": "green", "dead": "bold red"}.get(role_state, "")
        restarts = _num(info.get("restarts")) or 0
        table.add_row(str(name), _fmt(info.get("pid")), Text(role_state, style=state_style),
                      Text(_fmt(info.get("restarts")), style="yellow" if restarts else ""),
                      _fmt(info.get("queue_depth")), _throughput(info.get("stats")), heartbeat)
    if live and updated is not None and now - updated > STALE_HEARTBEAT_SECONDS:
        return Group(table, Text(f"status.json not rewritten for {_duration(now - updated)}: "
                                 "is the supervisor alive?", style="bold red"))
    return table


def _progress_line(state: RunState) -> Text:
    if state.ended:
        return Text("run finished", style="green")
    event = state.last(ev.Progress)
    if event is None:
        return Text("phase: -", style="dim")
    text = Text(f"round {event.round}  {event.phase}  {event.done}/{event.total}  ")
    if event.total:
        share = event.done / event.total
        text.append(_bar(share, 30).ljust(30, "·"), style="cyan")
        text.append(f" {100 * share:.0f}%")
    return text


def _fit_lines(state: RunState) -> list[Text]:
    """Training roles' step, loss and ETA, from their heartbeats (roles/step_log.py)."""
    roles = (state.status or {}).get("roles")
    if state.ended or not isinstance(roles, dict):
        return []
    lines = []
    for role in FIT_ROLES:
        stats = (roles.get(role) or {}).get("stats") if isinstance(roles.get(role), dict) else None
        text = fit_progress_text(role, stats) if isinstance(stats, dict) else None
        if text is None:
            continue
        line = Text(f"training  {text}  ")
        total, step = _num(stats.get("fit_total")), _num(stats.get("fit_step"))
        if total and step is not None:
            line.append(_bar(step / total, 30).ljust(30, "·"), style="magenta")
        lines.append(line)
    return lines


def _guard_section(state: RunState) -> RenderableType | None:
    """The collapse guard: its readings per round and its decision."""
    readings = state.all(ev.Guard)
    if not readings:
        return None
    table = Table(title="collapse guard (validation split)", title_justify="left")
    for name in ("round", "val pass@1", "diversity", "critic mean", "decision"):
        table.add_column(name, justify="right" if name != "decision" else "left")
    for e in readings:
        table.add_row(str(_round_key(e)), _fmt(e.val_pass_at_1), _fmt(e.diversity, 2),
                      _fmt(e.critic_mean), Text(e.reason, style="bold red" if e.stop else ""))
    stop = state.last(ev.EarlyStop)
    if stop is None:
        return table
    line = Text(f"EARLY STOP after round {stop.round}: {stop.reason} "
                f"({stop.rounds_skipped} rounds skipped)", style="bold red")
    return Group(table, line)


def render(run_dir: Path, now: float | None = None) -> RenderableType:
    """One frame of the view, built from the files in ``run_dir``. ``now``
    (unix seconds, default the clock) sets heartbeat and elapsed ages."""
    return _render_state(load(run_dir), time.time() if now is None else now)


def _render_state(state: RunState, now: float) -> RenderableType:
    parts: list[RenderableType] = [
        _header(state, now),
        _progress_line(state),
        *_fit_lines(state),
        _passk_section(state),
        _rounds_section(state),
    ]
    training = _training_section(state)
    if training is not None:
        parts.append(training)
    guard = _guard_section(state)
    if guard is not None:
        parts.append(guard)
    parts.append(_roles_section(state, now))
    return Panel(Group(*parts), title="constellation monitor", border_style="dim")


def monitor(run_dir: Path, refresh: float = 1.0, once: bool = False) -> None:
    """Show the view, redrawn every ``refresh`` seconds until the run_end
    event appears or Ctrl-C. ``once`` prints a single frame and returns."""
    run_dir = Path(run_dir)
    console = Console()
    if once:
        console.print(render(run_dir))
        return
    try:
        # auto_refresh off: we redraw once per read, no background thread spinning
        with Live(render(run_dir), console=console, auto_refresh=False) as live:
            while True:
                state = load(run_dir)
                live.update(_render_state(state, time.time()), refresh=True)
                if state.ended:
                    break
                time.sleep(refresh)
    except KeyboardInterrupt:
        pass
