"""A reply that does not cover its request never hangs a run, and never makes the coordinator raise.

The real coordinator loop in this process (the stand-ins of test_coordinator.py
and the real DSL verifier). A role wrapped in ``Doctored`` answers its first
few requests of one kind with a doctored reply (empty, partial, with ids
nobody asked for, from another adapter, with a score that is not a number),
then honestly. Every such run must end as the clean run ends: the same
verdict on every candidate (``fingerprint``), with the doctored replies
counted. A role that never answers properly must end the run with one
RequestFailed naming it and its request, within seconds. Each run has a
deadline, so a hang fails the test instead of hanging it.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable

import msgspec
import pytest

from constellation.protocol import config
from constellation.protocol import messages as m
from constellation.runtime import coverage
from constellation.runtime.client import InProcessRoleClient
from constellation.runtime.coordinator import Coordinator
from constellation.runtime.requests import RequestFailed
from constellation.runtime.store import save_split
from constellation.tasks.dsl import make_split
from test_coordinator import SETTINGS, StandIn, workers

DEADLINE = 60.0  # seconds; a clean in-process run takes about one


class Doctored(StandIn):
    """Wraps a role: the first ``times`` requests of type ``kind`` get ``doctor(request, honest reply)``."""

    def __init__(self, inner: Any, kind: type, doctor: Callable[[Any, Any], Any], times: int = 3) -> None:
        self.inner, self.kind, self.doctor, self.left = inner, kind, doctor, times
        self.doctored = 0

    def setup(self) -> dict[str, Any]:
        return self.inner.setup()

    def handle(self, msg: Any) -> Any:
        reply = self.inner.handle(msg)
        if isinstance(msg, self.kind) and self.left > 0:
            self.left -= 1
            self.doctored += 1
            return self.doctor(msg, reply)
        return reply


def run_with_deadline(tmp_path: Path, roles: dict[str, Any]) -> tuple[dict, BaseException | None]:
    """-> (the coordinator's counters, what it raised); fails if the run is not over within DEADLINE."""
    cfg = config.load("smoke", [*SETTINGS, "coordinator.request_timeout=2"])
    save_split(tmp_path, make_split(cfg.task, cfg.task_seed()))
    client = InProcessRoleClient(roles).start()
    stop = threading.Event()
    raised: list[BaseException] = []
    counters: dict = {}

    def go() -> None:  # the coordinator's store is made, used and closed in this thread (sqlite)
        coordinator = Coordinator(cfg, tmp_path, client, stop)
        try:
            coordinator.run()
        except BaseException as e:  # noqa: BLE001 -- handed to the test
            raised.append(e)
        finally:
            counters.update(coordinator.counters)
            coordinator.close()

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    thread.join(DEADLINE)
    hung = thread.is_alive()
    if hung:
        stop.set()
        thread.join(10)
    client.close()
    assert not hung, f"the run hung (still going after {DEADLINE:g} s)"
    return counters, (raised[0] if raised else None)


def fingerprint(run_dir: Path) -> list[tuple]:
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        return db.execute("SELECT v.candidate_id, v.status, v.heldout_correct, v.heldout_outputs, c.text "
                          "FROM verdicts v JOIN candidates c ON c.id = v.candidate_id ORDER BY 1").fetchall()


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> list[tuple]:
    run_dir = tmp_path_factory.mktemp("clean")
    counters, raised = run_with_deadline(run_dir, workers(run_dir))
    assert raised is None and not counters.get("refused_replies") and not counters.get("partial_replies")
    return fingerprint(run_dir)


def empty(req: Any, reply: Any) -> Any:
    if isinstance(reply, m.Scores):
        return msgspec.structs.replace(reply, candidate_ids=[], scores=[])
    return msgspec.structs.replace(reply, items=[])


def half(req: Any, reply: Any) -> Any:
    if isinstance(reply, m.Scores):
        n = len(reply.scores) // 2
        return msgspec.structs.replace(reply, candidate_ids=reply.candidate_ids[:n], scores=reply.scores[:n])
    return msgspec.structs.replace(reply, items=reply.items[:max(1, len(reply.items) // 2)])


def stranger_ids(req: Any, reply: Any) -> Any:
    """One item renamed into a phase that does not exist."""
    if isinstance(reply, m.Scores):
        return msgspec.structs.replace(reply, candidate_ids=["eval/99/nowhere/0", *reply.candidate_ids[1:]])
    first = reply.items[0]
    renamed = (msgspec.structs.replace(first, id="eval/99/nowhere/0") if isinstance(first, m.Candidate)
               else msgspec.structs.replace(first, candidate_id="eval/99/nowhere/0"))
    return msgspec.structs.replace(reply, items=[renamed, *reply.items[1:]])


def other_adapter(req: Any, reply: m.Candidates) -> m.Candidates:
    return msgspec.structs.replace(reply, items=[msgspec.structs.replace(c, adapter_version=c.adapter_version + 7)
                                                 for c in reply.items])


def nan_score(req: Any, reply: m.Scores) -> m.Scores:
    return msgspec.structs.replace(reply, scores=[math.nan, *reply.scores[1:]])


def one_score_short(req: Any, reply: m.Scores) -> m.Scores:
    return msgspec.structs.replace(reply, scores=reply.scores[:-1])


ROLE_OF = {m.GenerateRequest: "generator", m.VerifyRequest: "verifier", m.ScoreRequest: "critic"}
CASES = [
    (m.VerifyRequest, empty, "refused_replies"), (m.VerifyRequest, half, "partial_replies"),
    (m.VerifyRequest, stranger_ids, "refused_replies"),
    (m.GenerateRequest, empty, "refused_replies"), (m.GenerateRequest, half, "partial_replies"),
    (m.GenerateRequest, stranger_ids, "refused_replies"), (m.GenerateRequest, other_adapter, "refused_replies"),
    (m.ScoreRequest, empty, "refused_replies"), (m.ScoreRequest, half, "partial_replies"),
    (m.ScoreRequest, stranger_ids, "refused_replies"), (m.ScoreRequest, nan_score, "refused_replies"),
    (m.ScoreRequest, one_score_short, "refused_replies"),
]


@pytest.mark.parametrize("kind,doctor,counter", CASES, ids=[f"{k.__name__}-{d.__name__}" for k, d, _ in CASES])
def test_a_doctored_reply_is_refused_or_completed_and_the_run_ends_as_the_clean_one(tmp_path, clean, kind, doctor,
                                                                                    counter):
    roles = workers(tmp_path)
    role = ROLE_OF[kind]
    roles[role] = Doctored(roles[role], kind, doctor)
    counters, raised = run_with_deadline(tmp_path, roles)
    assert raised is None, raised
    # each doctored reply is counted, as refused or partial (a half reply to a re-sent request may cover nothing new)
    assert counters.get(counter, 0) >= 1, counters
    assert counters.get("refused_replies", 0) + counters.get("partial_replies", 0) == roles[role].doctored == 3
    assert fingerprint(tmp_path) == clean


def test_a_role_that_never_covers_a_request_ends_the_run_naming_it(tmp_path):
    roles = workers(tmp_path)
    roles["verifier"] = Doctored(roles["verifier"], m.VerifyRequest, empty, times=10**6)
    counters, raised = run_with_deadline(tmp_path, roles)
    assert isinstance(raised, RequestFailed), raised
    assert "verifier could not complete request verify-" in str(raised) and "(VerifyRequest)" in str(raised)
    assert counters["refused_replies"] >= 5  # each of the requests in flight was refused too


def test_coverage_refuses_what_was_not_asked_for_and_cuts_a_reply_to_what_is_missing():
    problem = m.Problem(id="p", task="dsl", prompt="", data={}, reference="")
    req = m.VerifyRequest(request_id="r", problem=problem, candidates=[
        m.Candidate(id=f"eval/0/p/{i}", problem_id="p", text="", logprob=0.0, adapter_version=0) for i in range(3)])
    asked = coverage.asked_ids(req)
    verdict = [m.Verdict(candidate_id=f"eval/0/p/{i}", problem_id="p", status="fail", visible_passed=0,
                         visible_total=1, heldout_correct=False) for i in range(4)]
    ok = coverage.check(req, m.Verdicts(request_id="r", items=verdict[:2]), set(asked))
    assert ok.covered == {"eval/0/p/0", "eval/0/p/1"} and len(ok.reply.items) == 2
    repeat = coverage.check(req, m.Verdicts(request_id="r", items=verdict[:3]), {"eval/0/p/2"})
    assert [v.candidate_id for v in repeat.reply.items] == ["eval/0/p/2"]  # already-answered ids tolerated, dropped
    assert "covers none" in coverage.check(req, m.Verdicts(request_id="r", items=verdict[:2]), {"eval/0/p/2"}).reason
    assert "twice" in coverage.check(req, m.Verdicts(request_id="r", items=verdict[:1] * 2), set(asked)).reason
    other = msgspec.structs.replace(verdict[0], problem_id="q")
    assert "names problem 'q'" in coverage.check(req, m.Verdicts(request_id="r", items=[other]), set(asked)).reason
    assert "cannot answer" in coverage.check(req, m.Scores(request_id="r", candidate_ids=[], scores=[]), set(asked)).reason
    assert coverage.check(req, m.Verdicts(request_id="r", items=verdict[3:]), set(asked)).reply is None  # not asked
