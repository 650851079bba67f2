"""Phases: sample k candidates for each of a set of problems, verify them all,
score them all, streaming (the part of the coordinator that moves candidates).

Generation is cut into small GenerateRequests (a few problems each) with
``window`` of them in flight. Each batch of candidates goes to the verifier as
soon as it arrives, and each batch of verdicts to the critic (the critic reads
the candidate's outputs on held-out inputs, which the verifier computes, so it
scores right after verification). Every reply is matched to its ``Phase`` by
its candidate ids; a candidate from an adapter other than the one its phase
samples with (the one served when the phase began), or for a problem outside
its phase, stops the run (CoordinatorError).

The loop's client is wrapped in a ``TimedClient``, which keeps the books the
pipeline bench and the events read: each role's busy seconds (as its replies
report them) and the seconds the coordinator waited for each role.

``PhaseLoop`` is the request loop plus this; ``Coordinator`` (coordinator.py)
adds the rounds on top.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections import defaultdict, deque
from pathlib import Path
from typing import Any, Callable

from constellation.protocol import events as ev
from constellation.protocol import messages as m
from constellation.protocol.config import Config
from constellation.protocol.transport import Envelope
from constellation.runtime.audit import Auditor
from constellation.runtime.client import RoleClient
from constellation.runtime.phase import Phase
from constellation.runtime.registry import resolve_task
from constellation.runtime.requests import CoordinatorError, RequestLoop
from constellation.runtime.store import RunStore, read_events
from constellation.runtime.tracking import open_tracker

log = logging.getLogger("coordinator")


def reply_seconds(msg: Any) -> float:
    """The time a role says it spent on a reply: ``seconds`` (candidates,
    verdicts, scores, adapter loads) or ``metrics["seconds"]`` (training)."""
    seconds = getattr(msg, "seconds", None)
    if seconds is None:
        metrics = getattr(msg, "metrics", None) or {}
        seconds = 0.0 if metrics.get("cached") else metrics.get("seconds")  # cached: answered from disk
    return float(seconds or 0.0)


class TimedClient:
    """A RoleClient that keeps two ledgers, role -> seconds:

    * ``busy``: what the role's replies say it worked (duplicates included:
      that work was done);
    * ``waited``: the coordinator's time in ``recv`` until a message from that
      role arrived, plus its time in ``send`` to the role (in process, ``send``
      is where the role works). Wall time minus all of it is the coordinator's
      own work, so per round this is the critical path: whom the round waited on.
    """

    def __init__(self, inner: RoleClient) -> None:
        self.inner, self.roles = inner, inner.roles
        self.busy: dict[str, float] = defaultdict(float)
        self.waited: dict[str, float] = defaultdict(float)
        self._waiting = 0.0  # recv time since the last message arrived

    def send(self, role: str, msg: Any) -> None:
        t0 = time.perf_counter()
        self.inner.send(role, msg)
        self.waited[role] += time.perf_counter() - t0

    def recv(self, timeout: float) -> Envelope | None:
        t0 = time.perf_counter()
        env = self.inner.recv(timeout)
        self._waiting += time.perf_counter() - t0
        if env is not None:
            peer = env.peer or "?"
            self.waited[peer] += self._waiting
            self.busy[peer] += reply_seconds(env.msg)
            self._waiting = 0.0
        return env

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class PhaseLoop(RequestLoop):
    def __init__(self, cfg: Config, run_dir: Path, client: RoleClient, stop: threading.Event | None = None) -> None:
        self.timed = TimedClient(client)
        super().__init__(self.timed, stop or threading.Event(), cfg.coordinator.request_timeout)
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.store = RunStore(run_dir, sinks=[open_tracker(cfg, self.run_dir, read_events(run_dir))])
        self.use_critic = "critic" in client.roles
        self.gen_queue: deque[m.GenerateRequest] = deque()
        self._handlers: dict[type, Callable[[Any], None]] = {
            m.Candidates: self._on_candidates, m.Verdicts: self._on_verdicts, m.Scores: self._on_scores,
            m.AdapterReady: self._on_reply, m.AdapterLoaded: self._on_reply, m.CriticTrained: self._on_reply,
            m.Judgments: self._on_reply,
        }
        self.phases: dict[str, Phase] = {}  # prefix -> a phase under way (a rationalize phase nests in train)
        self.served_version, self.served_path = 0, ""  # adapter the generator serves
        self.task: Any = None  # the task module (registry.resolve_task): critic_text
        self.auditor = Auditor.from_config(cfg, self.run_dir)  # re-verifies a share of the verdicts (audit.py)
        self._last_progress = 0.0

    @property
    def current(self) -> Phase | None:
        """The innermost phase under way (the newest one), for progress events."""
        return next(reversed(self.phases.values()), None)

    # ------------------------------------------------------------------
    # hooks of the request loop
    # ------------------------------------------------------------------
    def _before_poll(self) -> None:
        in_flight = sum(1 for p in self.pending.values() if isinstance(p.msg, m.GenerateRequest))
        while self.gen_queue and in_flight < self.cfg.coordinator.window:
            self._submit("generator", self.gen_queue.popleft())
            in_flight += 1

    def _after_dispatch(self) -> None:
        self._report_progress()

    def _on_role_restart(self, role: str, pid: int, resent: list[str]) -> None:
        """Before the restarted role's requests are re-sent: record it, and
        give a restarted generator back the adapter it served (the dealer keeps
        order, so the reload arrives before any re-sent generation)."""
        round_ = self.current.round if self.current else None
        self.store.event(ev.RoleRestart(round=round_, role=role, pid=pid, resent=len(resent)))
        if role == "generator" and self.served_version:
            load = m.LoadAdapter(request_id=self._rid("reload"), version=self.served_version, path=self.served_path)
            self._submit("generator", load)
            self._unawaited.add(load.request_id)

    # ------------------------------------------------------------------
    # replies of a phase: candidates -> verifier -> critic
    # ------------------------------------------------------------------
    def _phase_of(self, candidate_id: str) -> Phase:
        phase = self.phases.get("/".join(candidate_id.split("/")[:2]))
        if phase is None:
            raise CoordinatorError(f"candidate {candidate_id!r} belongs to no phase under way")
        return phase

    def _on_candidates(self, msg: m.Candidates) -> None:
        if not msg.items:
            return
        phase = self._phase_of(msg.items[0].id)
        fresh = [c for c in msg.items if c.id not in phase.candidates]
        for c in fresh:
            if c.adapter_version != phase.adapter_version:
                raise CoordinatorError(f"candidate {c.id} came from adapter v{c.adapter_version}, "
                                       f"expected v{phase.adapter_version}")
            if not phase.owns(c.id) or c.problem_id not in phase.problems:
                raise CoordinatorError(f"candidate {c.id} does not belong to phase {phase.prefix}")
        self.store.add_candidates(phase.round, phase.name, fresh)
        by_problem: dict[str, list[m.Candidate]] = defaultdict(list)
        for c in fresh:
            phase.candidates[c.id] = c
            by_problem[c.problem_id].append(c)
        self._verify(phase, by_problem)
        self.counters["candidates"] += len(fresh)

    def _verify(self, phase: Phase, by_problem: dict[str, list[m.Candidate]]) -> None:
        for pid, cands in by_problem.items():
            self._submit("verifier", m.VerifyRequest(request_id=self._rid("verify"), problem=phase.problems[pid],
                                                     candidates=cands))

    def _on_verdicts(self, msg: m.Verdicts) -> None:
        if not msg.items:
            return
        phase = self._phase_of(msg.items[0].candidate_id)
        fresh = [v for v in msg.items if v.candidate_id not in phase.verdicts and v.candidate_id in phase.candidates]
        if self.auditor is not None and fresh:  # before anything of it is stored (AuditFailed ends the run)
            self.auditor.check(phase.problems[fresh[0].problem_id], phase.candidates, fresh)
            self.counters["audited"], self.counters["audit_ms"] = self.auditor.audited, int(self.auditor.seconds * 1000)
        self.store.add_verdicts(fresh)
        for v in fresh:
            phase.verdicts[v.candidate_id] = v
        self._score(phase, fresh)

    def _score(self, phase: Phase, verdicts: list[m.Verdict]) -> None:
        """Gather verdicts into ScoreRequests of ``coordinator.score_batch``
        items: one critic forward per batch costs less CPU per item than one
        per problem's verdicts, CPU the generator needs on a small machine.
        The rest goes out when the phase's last verdict is in."""
        if not self.use_critic:
            return
        phase.to_score += [m.ScoreItem(candidate_id=v.candidate_id, problem_id=v.problem_id,
                                       text=self._critic_text(phase, v)) for v in verdicts]
        batch = max(1, self.cfg.coordinator.score_batch)
        while len(phase.to_score) >= batch or (phase.to_score and len(phase.verdicts) >= phase.expected):
            items, phase.to_score = phase.to_score[:batch], phase.to_score[batch:]
            self._submit("critic", m.ScoreRequest(request_id=self._rid("score"), items=items))

    def _critic_text(self, phase: Phase, v: m.Verdict) -> str:
        """The critic's input for one verified candidate, made once (for its
        score, then for its training label)."""
        text = phase.critic_texts.get(v.candidate_id)
        if text is None:
            text = phase.critic_texts[v.candidate_id] = self.task.critic_text(
                phase.problems[v.problem_id], phase.candidates[v.candidate_id].text, v.heldout_outputs)
        return text

    def _on_scores(self, msg: m.Scores) -> None:
        if len(msg.scores) != len(msg.candidate_ids):
            raise CoordinatorError(f"Scores {msg.request_id}: {len(msg.candidate_ids)} ids, {len(msg.scores)} scores")
        if not msg.candidate_ids:
            return
        phase = self._phase_of(msg.candidate_ids[0])
        fresh = [(c, s) for c, s in zip(msg.candidate_ids, msg.scores)
                 if c not in phase.scores and c in phase.verdicts]
        self.store.add_scores([c for c, _ in fresh], [s for _, s in fresh], msg.critic_version)
        phase.scores.update(fresh)
        phase.critic_version = max(phase.critic_version, msg.critic_version)

    def _report_progress(self) -> None:
        now, phase = time.monotonic(), self.current
        if now - self._last_progress < 1.0 or phase is None:
            return
        self._last_progress = now
        self.store.event(ev.Progress(round=phase.round, phase=phase.name, done=len(phase.verdicts),
                                     total=phase.expected, candidates=len(phase.candidates),
                                     scored=len(phase.scores), pending=len(self.pending),
                                     queued=len(self.gen_queue)))

    # ------------------------------------------------------------------
    # a phase
    # ------------------------------------------------------------------
    def sample(self, name: str, round: int, problems: list[m.Problem], k: int) -> Phase:
        """One phase outside the rounds (``constellation probe``): waits for the
        roles and loads the task first."""
        self.wait_for_workers()
        if self.task is None:
            self.task = resolve_task(self.cfg.task.impl)
        return self._sample(name, round, problems, k)

    def _sample(self, name: str, round: int, problems: list[m.Problem], k: int, scored: bool = True) -> Phase:
        """Generate k candidates per problem, verify them all, and score them
        all -- or, with ``scored=False``, return once every candidate is
        verified: the phase stays under way, its score requests already with
        the critic, until ``_await_scores`` (the generator need not wait for
        the critic). A phase still under way is picked up where it is; a
        resumed phase starts from what a previous coordinator recorded."""
        phase = self.phases.get(f"{name}/{round}") or self._open_phase(name, round, problems, k)
        try:
            t0 = time.monotonic()
            self._pump(lambda: not self.gen_queue and phase.complete(False))
            log.info("%s round %d: %d candidates in %.1fs", name, round, len(phase.candidates),
                     time.monotonic() - t0)
            if scored:
                self._await_scores(phase)
        except BaseException:
            self.phases.pop(phase.prefix, None)
            raise
        return phase

    def _await_scores(self, phase: Phase) -> Phase:
        """Serve messages until the critic has scored every candidate of the
        phase; the phase is then no longer under way."""
        try:
            self._pump(lambda: phase.complete(self.use_critic))
            self._report_progress()
        finally:
            self.phases.pop(phase.prefix, None)
        return phase

    def _open_phase(self, name: str, round: int, problems: list[m.Problem], k: int) -> Phase:
        """A phase under way, with whatever a previous coordinator recorded of
        it; its generation is queued (and the verification and scoring of what
        was recorded without them)."""
        phase = Phase(name, round, {p.id: p for p in problems}, k, adapter_version=self.served_version)
        cands, verdicts, scores = self.store.load_phase(round, name)
        phase.candidates = {c.id: c for c in cands}
        phase.verdicts = {v.candidate_id: v for v in verdicts}
        phase.scores = scores
        self.phases[phase.prefix] = phase
        self._queue_generation(phase, problems)
        if cands:
            log.info("resuming %s round %d: %d candidates, %d verdicts, %d scores already recorded",
                     name, round, len(cands), len(verdicts), len(scores))
            self._verify(phase, phase.unverified())
            if self.use_critic:  # verdicts recorded before a restart have no critic text yet
                self._score(phase, phase.unscored())
        return phase

    def _queue_generation(self, phase: Phase, problems: list[m.Problem]) -> None:
        """GenerateRequests of request_problems problems each; a chunk whose
        problems all have their k candidates already is skipped (resume)."""
        c, s = self.cfg.coordinator, self.cfg.sampling
        have = phase.have_per_problem()
        for i in range(0, len(problems), c.request_problems):
            chunk = problems[i:i + c.request_problems]
            if all(have[p.id] >= phase.k for p in chunk):
                continue
            seed = zlib.crc32(f"{self.cfg.run.seed}/{phase.name}/{phase.round}/{i}".encode())
            self.gen_queue.append(m.GenerateRequest(
                request_id=self._rid("generate"), problems=chunk, k=phase.k,
                sampling=m.Sampling(temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
                                    seed=seed),
                adapter_version=self.served_version, candidate_prefix=phase.prefix))
