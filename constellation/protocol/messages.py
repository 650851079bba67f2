"""Every message that crosses a process boundary, defined once.

Wire format: a message is two ZeroMQ frames,

    frame 0: b"cst/<SCHEMA_VERSION>"      -- the schema header
    frame 1: MessagePack of a tagged msgspec Struct

The Struct's tag (its ``kind``) tells which type it is, so a receiver decodes
straight into the exact union of types it expects and rejects anything else.
A frame that does not decode raises ``DecodeError``; the transport turns that
into an ``Error`` reply and the receiver goes on.

Work items carry ids (problem id, candidate id, request id, adapter version):
a result whose id is already recorded is ignored by the coordinator, so a
re-sent request after a role restart never counts twice.
"""

from __future__ import annotations

from typing import Any, Literal, Union

import msgspec

SCHEMA_VERSION = 1
HEADER = f"cst/{SCHEMA_VERSION}".encode()


class DecodeError(Exception):
    """A frame that is not a valid message of the expected kinds."""


class _Msg(msgspec.Struct, tag_field="kind", forbid_unknown_fields=True, omit_defaults=False):
    pass


# --------------------------------------------------------------------------
# Domain objects (also stored in the run store)
# --------------------------------------------------------------------------


class Problem(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    task: str  # task family, e.g. "dsl"
    prompt: str  # exactly the text the generator conditions on
    # task-specific payload the verifier needs. For "dsl":
    #   visible: [[input, output], ...], heldout_inputs: [...], heldout_outputs: [...]
    data: dict[str, Any]
    reference: str | None = None  # a known-correct solution (the hidden program)
    difficulty: int = 0  # e.g. the DSL program depth


class Split(msgspec.Struct, forbid_unknown_fields=True):
    """A task's problems for one run: what a task module's ``make_split`` returns
    and what the run store saves once (``split.msgpack``) for the coordinator."""

    labeled: list[Problem]  # L: problems with reference solutions, for the warm start
    train: list[Problem]  # the unlabeled pool the rounds sample from
    eval: list[Problem]  # the fixed evaluation set, disjoint from both


class Candidate(msgspec.Struct, forbid_unknown_fields=True):
    id: str  # unique per run: "<phase>/<round>/<problem_id>/<index>"
    problem_id: str
    text: str  # the completion only (no prompt)
    logprob: float  # summed log-probability of the completion tokens
    adapter_version: int  # 0 = base model


# crash / memory: code run in a sandboxed child (verifiers/code.py) that died or ran out of memory
VerdictStatus = Literal["pass", "fail", "parse_error", "runtime_error", "timeout", "crash", "memory"]


class Verdict(msgspec.Struct, forbid_unknown_fields=True):
    candidate_id: str
    problem_id: str
    status: VerdictStatus  # "pass" = every visible example reproduced
    visible_passed: int
    visible_total: int
    heldout_correct: bool | None  # None when the program did not run
    # the candidate's outputs on the held-out inputs (None for an input that
    # failed); used by majority vote and shown to the critic. Never the truth.
    heldout_outputs: list[str | None] | None = None
    detail: str = ""


class ScoreItem(msgspec.Struct, forbid_unknown_fields=True):
    candidate_id: str
    problem_id: str
    text: str  # critic input text, built by constellation.tasks.critic_text


class LabeledItem(msgspec.Struct, forbid_unknown_fields=True):
    candidate_id: str
    problem_id: str
    text: str
    label: bool  # held-out correct
    visible_pass: bool = False  # passed the visible examples (critic metrics among these)


class TrainExample(msgspec.Struct, forbid_unknown_fields=True):
    problem_id: str
    prompt: str
    completion: str  # loss is taken on these tokens only
    adapter_version: int = 0  # the adapter that sampled the completion (staleness under coordinator.overlap)


class PreferencePair(msgspec.Struct, forbid_unknown_fields=True):
    """One DPO pair: the same prompt, a preferred and a dispreferred completion
    (built by constellation.algorithms.pairs)."""

    problem_id: str
    prompt: str
    chosen: str  # completion text only (no prompt, no eos)
    rejected: str
    source: str  # "verifier" | "critic" | "self_judge"
    margin: float = 1.0  # chosen score - rejected score under the source (> 0)
    round: int = 0  # the round whose candidates made the pair
    weight: float = 1.0  # loss weight; earlier rounds' pairs get decay**age


class JudgeItem(msgspec.Struct, forbid_unknown_fields=True):
    candidate_id: str
    problem_id: str
    prompt: str  # the problem prompt the candidate answered
    text: str  # the candidate completion


# --------------------------------------------------------------------------
# Lifecycle (role <-> supervisor, role <-> coordinator)
# --------------------------------------------------------------------------


class Ready(_Msg, tag="ready"):
    role: str
    pid: int
    impl: str
    info: dict[str, Any] = {}
    launch: str = ""  # the token the supervisor started this process with (runtime/lifecycle.py)


class Heartbeat(_Msg, tag="heartbeat"):
    role: str
    pid: int
    state: str  # "idle" | "busy" | ...
    queue_depth: int = 0
    stats: dict[str, float] = {}


class Hello(_Msg, tag="hello"):
    """Coordinator -> worker: announce yourself. A (re)started coordinator
    sends it until every worker has answered with Ready."""


class Shutdown(_Msg, tag="shutdown"):
    reason: str = ""


class Dead(_Msg, tag="dead"):
    role: str
    pid: int
    reason: str


class Finished(_Msg, tag="finished"):
    """The coordinator is done with every round; the supervisor shuts down."""

    ok: bool
    summary: str = ""


class Error(_Msg, tag="error"):
    request_id: str
    error_kind: str  # "decode" | "schema" | "role" | ...
    message: str


# --------------------------------------------------------------------------
# Work (coordinator <-> worker roles). Every request has a request_id that the
# reply echoes; the coordinator keeps unanswered requests per role and re-sends
# them when that role announces Ready again after a restart.
# --------------------------------------------------------------------------


class Sampling(msgspec.Struct, forbid_unknown_fields=True):
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    seed: int = 0


class GenerateRequest(_Msg, tag="generate"):
    request_id: str
    problems: list[Problem]
    k: int  # candidates per problem
    sampling: Sampling
    adapter_version: int  # the version the coordinator expects to be served
    candidate_prefix: str  # candidate id = f"{prefix}/{problem.id}/{i}"


class Candidates(_Msg, tag="candidates"):
    request_id: str
    items: list[Candidate]
    seconds: float = 0.0


class VerifyRequest(_Msg, tag="verify"):
    request_id: str
    problem: Problem
    candidates: list[Candidate]


class Verdicts(_Msg, tag="verdicts"):
    request_id: str
    items: list[Verdict]
    seconds: float = 0.0


class ScoreRequest(_Msg, tag="score"):
    request_id: str
    items: list[ScoreItem]


class Scores(_Msg, tag="scores"):
    request_id: str
    candidate_ids: list[str]
    scores: list[float]  # P(held-out correct), same order as candidate_ids
    critic_version: int = 0
    seconds: float = 0.0  # the critic's time on this request


class TrainRequest(_Msg, tag="train"):
    request_id: str
    round: int
    examples: list[TrainExample]
    pairs: list[PreferencePair] = []  # for preference trainers (trainer.impl = "dpo")


class JudgeRequest(_Msg, tag="judge"):
    """Coordinator -> trainer (pairs.source = "self_judge"): score these
    candidates with the policy as it is now (the adapter in service)."""

    request_id: str
    round: int
    items: list[JudgeItem]


class Judgments(_Msg, tag="judgments"):
    request_id: str
    candidate_ids: list[str]
    scores: list[float | None]  # same order; None = no judgment (unparseable)
    method: str = ""  # "likelihood" | "llm"


class StepPoint(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """One optimizer step of a role's training, for the trackers' curves
    (a JSON array [step, loss, lr, grad_norm] in metrics.jsonl)."""

    step: int  # from 1, within this round's training
    loss: float | None  # None: not finite
    lr: float
    grad_norm: float | None  # before clipping; None: not finite


class AdapterReady(_Msg, tag="adapter_ready"):
    request_id: str
    version: int
    path: str
    metrics: dict[str, float] = {}
    curve: list[StepPoint] = []  # the round's steps (thinned to at most a few thousand); [] when not trained now


class LoadAdapter(_Msg, tag="load_adapter"):
    request_id: str
    version: int
    path: str  # "" = go back to the base model


class AdapterLoaded(_Msg, tag="adapter_loaded"):
    request_id: str
    version: int
    seconds: float = 0.0


class CriticTrainRequest(_Msg, tag="critic_train"):
    request_id: str
    round: int
    labels: list[LabeledItem]


class CriticTrained(_Msg, tag="critic_trained"):
    request_id: str
    round: int
    version: int
    metrics: dict[str, float] = {}
    curve: list[StepPoint] = []  # the round's critic training steps, as AdapterReady's


Message = Union[
    Ready, Heartbeat, Hello, Shutdown, Dead, Finished, Error,
    GenerateRequest, Candidates, VerifyRequest, Verdicts, ScoreRequest, Scores,
    TrainRequest, JudgeRequest, Judgments, AdapterReady, LoadAdapter, AdapterLoaded, CriticTrainRequest, CriticTrained,
]

_encoder = msgspec.msgpack.Encoder()
_decoders: dict[Any, msgspec.msgpack.Decoder] = {}


def encode(msg: _Msg) -> list[bytes]:
    """Message -> frames."""
    return [HEADER, _encoder.encode(msg)]


def decode(frames: list[bytes], expected: Any = Message) -> Any:
    """Frames -> a message of one of the ``expected`` types, or DecodeError.

    ``expected`` is a Struct type or a Union of them; anything else on the
    wire (unknown schema, other kind, wrong field types) is rejected."""
    if len(frames) != 2:
        raise DecodeError(f"expected 2 frames (header, payload), got {len(frames)}")
    header, payload = frames
    if header != HEADER:
        raise DecodeError(
            f"unknown schema header {header[:32]!r}; this build speaks {HEADER.decode()}")
    dec = _decoders.get(expected)
    if dec is None:
        dec = _decoders[expected] = msgspec.msgpack.Decoder(expected)
    try:
        return dec.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise DecodeError(f"undecodable payload ({len(payload)} bytes): {e}") from e
