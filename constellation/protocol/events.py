"""Every event of a run's metrics log, defined once: the coordinator writes them,
the console, the monitor, the study and the exporters read them.

On disk an event is one JSON object per line of ``RUN_DIR/metrics.jsonl`` (and a
row of run.sqlite's ``metrics`` table), so ``jq`` reads it as it is:

    {"event": "eval", "time": 1733300000.123, "round": 1, "model": "round-1", ...}

``event`` is the kind (the struct's tag), ``time`` the wall-clock second it was
written, ``round`` the round it belongs to (null for run-level events). Readers
decode a line with ``decode_event`` into exactly one of the structs below; a
line of an unknown kind or with wrong field types is reported as bad and
skipped, never guessed at. Fields a newer writer adds are ignored by an older
reader (no forbid_unknown_fields), so old run directories stay readable.

A role's free-form metrics (the trainer's losses, the critic's AUROC) stay a
flat ``metrics`` object: their keys depend on the implementation.
"""

from __future__ import annotations

import time
from typing import Any, Union

import msgspec

from constellation.protocol.messages import StepPoint


class Event(msgspec.Struct, tag_field="event", kw_only=True):
    time: float = 0.0  # set by the store when the event is written
    round: int | None = None


# -- the run -----------------------------------------------------------------


class RunStart(Event, tag="run_start"):
    run_dir: str
    rounds: int
    seed: int
    resumed: bool  # a coordinator (re)started on a run directory that had rounds
    manifest: dict[str, Any] = {}  # what produced the run: code, versions, hardware, config (runtime/manifest.py)


class RunEnd(Event, tag="run_end"):
    ok: bool
    counters: dict[str, int] = {}  # the request loop's counters (re-sends, ignored replies, restarts)
    # role -> seconds it spent on this run's requests, as its replies report them (generator: sampling and adapter loads)
    busy_seconds: dict[str, float] = {}
    # role -> seconds the coordinator waited for that role's replies ("coordinator": its own work)
    waited_seconds: dict[str, float] = {}
    reason: str = ""  # why a run ended without finishing (ok = False): one line naming the role and the request


class RoleRestart(Event, tag="role_restart"):
    role: str
    pid: int  # of the new process
    resent: int  # in-flight requests sent again


class Progress(Event, tag="progress"):
    """At most once a second while a phase samples, verifies and scores."""

    phase: str  # "eval" | "train" | "val" | "rationalize"
    done: int  # candidates verified
    total: int  # candidates the phase needs
    candidates: int
    scored: int
    pending: int  # requests in flight
    queued: int  # generate requests not yet sent


# -- evaluation ----------------------------------------------------------------


class Eval(Event, tag="eval"):
    model: str  # "base" | "round-<r>"
    adapter_version: int
    n_problems: int
    n_samples: int  # n of pass@k
    pass_at_k: dict[str, float]  # "k" -> mean unbiased pass@k over problems
    selection_k: int
    selection_accuracy: dict[str, float | None]  # policy -> held-out accuracy of its pick at selection_k
    n_agree: int  # problems whose visible-pass candidates agree on every held-out input
    # "k" -> "all" | "agree" | "disagree" -> policy -> accuracy (algorithms.selection.selection_table)
    selection: dict[str, Any] = {}
    critic_version: int = 0


class Zpd(Event, tag="zpd"):
    pass_at_1: float
    low: float
    high: float
    verdict: str  # "in ZPD at 31%", ...


class Crossover(Event, tag="crossover"):
    k_star: int | None  # smallest k where the base's pass@k >= this round's; None = never


# -- a training round ------------------------------------------------------------


class Rationalize(Event, tag="rationalize"):
    enabled: bool
    reason: str | None = None  # why not, when the task gives no hints


class Pairs(Event, tag="pairs"):
    source: str
    n_pairs: int  # built from this round's candidates
    n_earlier: int  # mixed in from earlier rounds
    n_problems: int
    n_problems_with_pairs: int
    by_source: dict[str, int] = {}
    judge_method: str | None = None  # self_judge only
    n_judge_items: int | None = None
    n_judged: int | None = None


class Trainer(Event, tag="trainer"):
    version: int  # adapter version the round produced (the previous one when skipped)
    path: str
    n_examples: int
    n_pairs: int
    metrics: dict[str, float | None] = {}  # the trainer's own: loss_first, loss_last, steps, seconds, ... (NaN is written as null)
    curve: list[StepPoint] = []  # loss, lr and grad norm per step ([] for a skipped or re-sent round)


class Critic(Event, tag="critic"):
    version: int
    metrics: dict[str, float | None] = {}  # auroc, ece, heldout_logloss, n_train, ... (roles/critic.py)
    curve: list[StepPoint] = []  # the critic's training steps, as Trainer's


class RoundEnd(Event, tag="round_end"):
    n_problems: int
    n_candidates: int
    n_visible_pass: int
    n_selected: int
    n_train_examples: int
    n_rationalize_attempts: int = 0
    n_rationalized: int = 0
    train_precision: float | None = None  # held-out correct share of the selected candidates
    adapter_load_seconds: float = 0.0
    seconds: float = 0.0
    # the critical path: role -> seconds this round waited for its replies ("coordinator": its own work)
    waited: dict[str, float] = {}
    train_adapter_version: int | None = None  # the adapter that sampled this round's training candidates
    staleness: float | None = None  # mean of (round - 1 - adapter version) over this round's selected examples: 0 on-policy, 1 under one_step


# -- the collapse guard ------------------------------------------------------------


class Guard(Event, tag="guard"):
    val_pass_at_1: float
    diversity: float | None  # None: NaN (no held-out outputs), which JSON writes as null
    critic_mean: float | None
    n_problems: int
    n_samples: int
    stop: bool
    reason: str
    falls: int
    diversity_ratio: float | None
    best_round: int


class EarlyStop(Event, tag="early_stop"):
    reason: str
    best_round: int
    rounds_skipped: int


AnyEvent = Union[RunStart, RunEnd, RoleRestart, Progress, Eval, Zpd, Crossover, Rationalize, Pairs, Trainer, Critic,
                 RoundEnd, Guard, EarlyStop]
KINDS: dict[str, type[Event]] = {cls.__struct_config__.tag: cls for cls in AnyEvent.__args__}

_encoder = msgspec.json.Encoder()
# lax: a count written as 342.0 (run directories of earlier versions spread the
# trainer's float metrics over its fields) reads as 342; a wrong kind still fails
_decoder = msgspec.json.Decoder(AnyEvent, strict=False)


class BadEvent(ValueError):
    """A metrics line that is not one of the events above."""


def stamp(event: Event) -> Event:
    """The event with ``time`` set to now (rounded to ms)."""
    return msgspec.structs.replace(event, time=round(time.time(), 3))


def encode_event(event: Event) -> bytes:
    """One line of metrics.jsonl (without the newline)."""
    return _encoder.encode(event)


def decode_event(line: bytes | str) -> Event:
    try:
        return _decoder.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise BadEvent(str(e)) from e


def kind_of(event: Event) -> str:
    return event.__struct_config__.tag
