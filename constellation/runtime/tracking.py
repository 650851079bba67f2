"""Experiment tracking: the run's typed events, as TensorBoard / W&B / MLflow see them.

One place turns events into tracked points (``Tracks``), the same way live and
afterwards: the run store hands every event it writes to a ``Tracker`` (a sink
of ``RunStore``), and ``constellation export`` replays run.sqlite's events
through a fresh one. Which backends a run has is ``[tracking]`` in its config
(runtime/tracking_backends.py; each library is imported only when enabled).

A point (``Point``, in tracking_backends.py, the module below this one) is a
scalar or a PNG image under a tag, at a step on one of three axes:

  round         per round (0 = the base): eval/pass_at_k/<k>, eval/selection/k<k>/<group>/<policy>,
                eval/k_star, critic/<metric> (auroc, ece, ...), trainer/<metric>, guard/<reading>,
                round/<count>, pairs/<count>, generator/candidates_per_second/<phase>,
                and the image eval/pass_at_k_curve (the base's pass@k curve and the round's)
  trainer_step  trainer/loss, trainer/lr, trainer/grad_norm, counted across rounds
  critic_step   critic/loss, critic/lr, critic/grad_norm, counted across rounds

Tracking never stops a run: a backend that raises is logged once and dropped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Iterable

import msgspec

from constellation.protocol import events as ev
from constellation.protocol.config import Config
from constellation.runtime.tracking_backends import Point, open_backends

log = logging.getLogger("tracking")

def _scalars(prefix: str, values: dict[str, Any], event: ev.Event) -> list[Point]:
    """Numeric values (not bools' strings, not None) as points at the event's round."""
    return [Point(f"{prefix}/{k}", event.round or 0, event.time, float(v)) for k, v in values.items()
            if isinstance(v, (int, float)) and v == v]


class Tracks:
    """Typed events -> points. Remembers what later points need: the base's
    pass@k (the curve figure), how many trainer and critic steps earlier rounds
    took (the step axes), and the running generation phase (its throughput)."""

    def __init__(self) -> None:
        self.base_pass: dict[str, float] = {}
        self.steps_done = {"trainer": 0, "critic": 0}
        self._phase: list[Any] | None = None  # [(round, phase), t_first, candidates_first, t_last, candidates_last]
        self._handlers: dict[type, Callable[[Any], list[Point]]] = {
            ev.Eval: self._eval, ev.Crossover: self._crossover, ev.Trainer: self._trainer, ev.Critic: self._critic,
            ev.Guard: self._guard, ev.RoundEnd: self._round_end, ev.Pairs: self._pairs,
        }

    def points(self, event: ev.Event) -> list[Point]:
        if isinstance(event, ev.Progress):
            return self._progress(event)
        out = self.end_phase()
        handler = self._handlers.get(type(event))
        return out + (handler(event) if handler else [])

    # -- per kind ------------------------------------------------------------
    def _eval(self, e: ev.Eval) -> list[Point]:
        r = e.round or 0
        out = [Point(f"eval/pass_at_k/{k}", r, e.time, v) for k, v in e.pass_at_k.items()]
        for k, groups in e.selection.items():
            for group, policies in (groups or {}).items():
                out += _scalars(f"eval/selection/k{k}/{group}", policies or {}, e)
        out += _scalars(f"eval/selection_at_{e.selection_k}", e.selection_accuracy, e)
        out.append(Point("eval/n_agree", r, e.time, float(e.n_agree)))
        if r == 0:
            self.base_pass = dict(e.pass_at_k)
        elif self.base_pass:
            png = pass_at_k_figure(self.base_pass, e.pass_at_k, e.model)
            out.append(Point("eval/pass_at_k_curve", r, e.time, png=png))
        return out

    def _crossover(self, e: ev.Crossover) -> list[Point]:
        return [] if e.k_star is None else [Point("eval/k_star", e.round or 0, e.time, float(e.k_star))]

    def _curve(self, role: str, e: ev.Trainer | ev.Critic) -> list[Point]:
        """The round's per-step curve on the role's step axis, after the earlier rounds' steps."""
        offset, axis, out = self.steps_done[role], f"{role}_step", []
        for p in e.curve:
            for name, value in (("loss", p.loss), ("lr", p.lr), ("grad_norm", p.grad_norm)):
                if value is not None:
                    out.append(Point(f"{role}/{name}", offset + p.step, e.time, value, axis=axis))
        last = e.curve[-1].step if e.curve else 0
        self.steps_done[role] = offset + max(last, int(e.metrics.get("steps") or 0))
        return out

    def _trainer(self, e: ev.Trainer) -> list[Point]:
        return _scalars("trainer", e.metrics, e) + self._curve("trainer", e)

    def _critic(self, e: ev.Critic) -> list[Point]:
        return _scalars("critic", e.metrics, e) + self._curve("critic", e)

    def _guard(self, e: ev.Guard) -> list[Point]:
        readings = {"val_pass_at_1": e.val_pass_at_1, "diversity": e.diversity, "critic_mean": e.critic_mean,
                    "diversity_ratio": e.diversity_ratio, "falls": e.falls, "stop": float(e.stop)}
        return _scalars("guard", readings, e)

    def _round_end(self, e: ev.RoundEnd) -> list[Point]:
        counts = {k: v for k, v in msgspec.structs.asdict(e).items() if k not in ("time", "round")}
        return _scalars("round", counts, e)

    def _pairs(self, e: ev.Pairs) -> list[Point]:
        return _scalars("pairs", {"n_pairs": e.n_pairs, "n_earlier": e.n_earlier, "n_problems": e.n_problems,
                                  "n_problems_with_pairs": e.n_problems_with_pairs}, e)

    # -- generator throughput, from the progress events of a phase ------------
    def _progress(self, e: ev.Progress) -> list[Point]:
        key = (e.round or 0, e.phase)
        out = [] if self._phase is not None and self._phase[0] == key else self.end_phase()
        if self._phase is None:
            self._phase = [key, e.time, e.candidates, e.time, e.candidates]
        self._phase[3:] = [e.time, e.candidates]
        return out

    def end_phase(self) -> list[Point]:
        """Candidates per second between the phase's first and last progress event."""
        phase, self._phase = self._phase, None
        if phase is None or phase[3] <= phase[1] or phase[4] <= phase[2]:
            return []
        (r, name), t0, c0, t1, c1 = phase
        return [Point(f"generator/candidates_per_second/{name}", r, t1, (c1 - c0) / (t1 - t0))]


def pass_at_k_figure(base: dict[str, float], this: dict[str, float], label: str) -> bytes:
    """PNG of pass@k against k (log2 axis): the base and ``label``'s curve."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.8, 3.2), dpi=80)
    ax = fig.add_subplot()
    for name, curve, style in (("base", base, "o--"), (label, this, "o-")):
        ks = sorted(int(k) for k in curve)
        ax.plot(ks, [curve[str(k)] for k in ks], style, label=name)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="k", ylabel="pass@k", ylim=(0, 1), title=f"pass@k: base vs {label}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


class Tracker:
    """A RunStore sink: each event -> points -> every enabled backend."""

    def __init__(self, backends: list[Any], history: Iterable[ev.Event] = ()) -> None:
        self.tracks = Tracks()
        for event in history:  # a resumed run: rebuild the state, write nothing again
            self.tracks.points(event)
        self.backends = backends

    def __call__(self, event: ev.Event) -> None:
        if self.backends:
            self._write(self.tracks.points(event), flush=not isinstance(event, ev.Progress))

    def _write(self, points: list[Point], flush: bool) -> None:
        for backend in list(self.backends):
            try:
                backend.write(points, flush=flush)
            except Exception as e:  # tracking never stops a run
                log.warning("tracking: %s failed (%s: %s); it is off for the rest of the run",
                            type(backend).__name__, type(e).__name__, e)
                self.backends.remove(backend)

    def close(self) -> None:
        self._write(self.tracks.end_phase(), flush=True)  # a phase still open: its throughput
        for backend in self.backends:
            try:
                backend.close()
            except Exception as e:
                log.warning("tracking: closing %s failed: %s", type(backend).__name__, e)
        self.backends = []


def open_tracker(cfg: Config, run_dir: Path, history: Iterable[ev.Event] = ()) -> Tracker | None:
    """The tracker of a run's ``[tracking]`` config, None when every backend is off."""
    backends = open_backends(cfg, Path(run_dir))
    return Tracker(backends, history) if backends else None
