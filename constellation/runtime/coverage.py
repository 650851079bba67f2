"""Does a reply cover its request? What each request asked for, and the part of a reply that answers it.

    Asked.of(request)              -> the item ids a request asks for (None: a one-off request)
    check(request, reply, missing) -> Checked(reply with only the items still missing, covered ids, reason)

A request is done only when its replies have covered every item it asked
for: a GenerateRequest asks for ``k`` candidates of each of its problems (ids
``<prefix>/<problem id>/<i>``, i < k, from the adapter the request names), a
VerifyRequest for a verdict on each of its candidates, a ScoreRequest for a
finite score of each of its items. A one-off request (train, load an adapter,
train the critic, judge) asks for a reply of its own kind that names it.

Nothing that arrives on a socket is trusted: a reply holding an item the
request did not ask for (an unknown id, an id twice, a candidate from another
adapter or of another problem, a verdict naming another problem, a score that
is not a finite number) is refused whole, and so is a reply that covers
nothing still missing; ``reason`` says why. A reply that covers part of what
is missing is accepted for that part; the request loop (requests.py) re-sends
the request for the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import msgspec

from constellation.protocol import messages as m

# request type -> the reply type that answers it
REPLY_OF: dict[type, type] = {
    m.GenerateRequest: m.Candidates, m.VerifyRequest: m.Verdicts, m.ScoreRequest: m.Scores,
    m.TrainRequest: m.AdapterReady, m.LoadAdapter: m.AdapterLoaded, m.CriticTrainRequest: m.CriticTrained,
    m.JudgeRequest: m.Judgments,
}


def asked_ids(request: Any) -> frozenset[str] | None:
    """The ids of the items ``request`` asks for; None for a request answered by one reply."""
    if isinstance(request, m.GenerateRequest):
        return frozenset(f"{request.candidate_prefix}/{p.id}/{i}" for p in request.problems for i in range(request.k))
    if isinstance(request, m.VerifyRequest):
        return frozenset(c.id for c in request.candidates)
    if isinstance(request, m.ScoreRequest):
        return frozenset(i.candidate_id for i in request.items)
    return None


@dataclass
class Checked:
    reply: Any | None  # the reply cut down to the items still missing; None = refused
    covered: set[str] = field(default_factory=set)
    reason: str = ""  # why it was refused


def _refused(reason: str) -> Checked:
    return Checked(None, set(), reason)


def check(request: Any, reply: Any, missing: frozenset[str] | set[str] | None) -> Checked:
    """``reply`` against ``request``, of whose items ``missing`` are still unanswered (None: a one-off request)."""
    want = REPLY_OF.get(type(request))
    if want is not None and type(reply) is not want:
        return _refused(f"a {type(reply).__name__} cannot answer a {type(request).__name__}")
    asked = asked_ids(request) or frozenset()
    if isinstance(request, m.GenerateRequest):
        return _covering(reply, [c.id for c in reply.items], asked, missing, _bad_candidate(request, reply.items))
    if isinstance(request, m.VerifyRequest):
        bad = next((f"verdict for {v.candidate_id!r} names problem {v.problem_id!r}, not {request.problem.id!r}"
                    for v in reply.items if v.problem_id != request.problem.id), "")
        return _covering(reply, [v.candidate_id for v in reply.items], asked, missing, bad)
    if isinstance(request, m.ScoreRequest):
        if len(reply.scores) != len(reply.candidate_ids):
            return _refused(f"{len(reply.candidate_ids)} candidate ids but {len(reply.scores)} scores")
        bad = next((f"score {s!r} of {c!r} is not a finite number"
                    for c, s in zip(reply.candidate_ids, reply.scores) if not math.isfinite(s)), "")
        return _covering(reply, reply.candidate_ids, asked, missing, bad)
    return _one_off(request, reply)


def _bad_candidate(request: m.GenerateRequest, items: list[m.Candidate]) -> str:
    for c in items:
        if c.adapter_version != request.adapter_version:
            return f"candidate {c.id!r} came from adapter v{c.adapter_version}, the request asked for v{request.adapter_version}"
        if not c.id.startswith(f"{request.candidate_prefix}/{c.problem_id}/"):
            return f"candidate {c.id!r} says it answers problem {c.problem_id!r}"
    return ""


def _covering(reply: Any, ids: list[str], asked: frozenset[str], missing, bad: str) -> Checked:
    """Refuse on ``bad``, an id twice, an id not ``asked`` for, or nothing
    still ``missing`` (ids asked for and already answered are tolerated as
    repeats); else the reply cut to the new items."""
    if bad:
        return _refused(bad)
    if len(set(ids)) != len(ids):
        return _refused(f"the reply holds {len(ids) - len(set(ids))} ids twice")
    stranger = next((i for i in ids if i not in asked), None)
    if stranger is not None:
        return _refused(f"the reply holds {stranger!r}, which the request did not ask for")
    new = {i for i in ids if i in missing}
    if not new:
        return _refused(f"the reply covers none of the {len(missing)} items still missing"
                        + (f" ({len(ids)} items, none asked for)" if ids else " (it is empty)"))
    return Checked(_only(reply, new), new)


def _only(reply: Any, keep: set[str]) -> Any:
    """The reply with only the items whose ids are in ``keep`` (same order)."""
    if isinstance(reply, m.Candidates):
        return msgspec.structs.replace(reply, items=[c for c in reply.items if c.id in keep])
    if isinstance(reply, m.Verdicts):
        return msgspec.structs.replace(reply, items=[v for v in reply.items if v.candidate_id in keep])
    pairs = [(c, s) for c, s in zip(reply.candidate_ids, reply.scores) if c in keep]
    return msgspec.structs.replace(reply, candidate_ids=[c for c, _ in pairs], scores=[s for _, s in pairs])


def _one_off(request: Any, reply: Any) -> Checked:
    if isinstance(request, m.LoadAdapter):
        if reply.version != request.version and (reply.version != 0 or request.path):  # no path: the base is fine
            return _refused(f"the generator says it serves v{reply.version}, the request loads v{request.version}")
    if isinstance(request, m.TrainRequest):  # a skipped round answers with the trainer's last adapter (v0: the base)
        if not 0 <= reply.version <= request.round:
            return _refused(f"AdapterReady v{reply.version} cannot answer round {request.round}")
    if isinstance(request, m.CriticTrainRequest) and reply.round != request.round:
        return _refused(f"the critic says it trained round {reply.round}, the request is round {request.round}")
    if isinstance(request, m.JudgeRequest):
        if len(reply.scores) != len(reply.candidate_ids) or set(reply.candidate_ids) != {i.candidate_id for i in request.items}:
            return _refused("the judgments do not name exactly the candidates asked for")
        if any(s is not None and not math.isfinite(s) for s in reply.scores):
            return _refused("a judgment is not a finite number")
    return Checked(reply, set())
