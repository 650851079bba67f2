"""The coordinator: runs rounds, routes work, selects, evaluates.

It is the hub. It reaches the worker roles (generator, verifier, critic,
trainer) through a ``RoleClient`` (runtime/client.py: ZeroMQ across processes,
or in-process for the probe, the benches and tests); it is the only process
that writes the run store and the only one that makes training decisions.

A round, top-down (``_train_round``):
  draw problems -> sample k each (a train ``Phase``) -> select training
  examples -> rationalize failures -> build what the trainer wants (examples
  or pairs, as it declared in READY) -> train trainer and critic at the same
  time -> serve the new adapter -> evaluate it and let the guard read it
  (``_close_round``, runtime/evaluation.py).

Sampling, verifying and scoring a phase, streamed, is ``PhaseLoop``'s
(runtime/sampler.py); closing a round is ``EvalLoop``'s (runtime/evaluation.py);
this file is the rounds on top of them.

``coordinator.overlap = "one_step"`` (``_one_step_rounds``) keeps the
generator busy while the trainer trains round r: it evaluates round r-1 with
adapter r-1 (exactly that adapter), then samples round r+1's training
candidates with it too, one round stale (one-step off-policy, as AReaL and
verl). The critic is asked to train on round r's labels after it was asked to
score round r-1's evaluation, so every phase is scored by the same critic
version as under "none"; the generator does not wait for those scores (a phase
is sampled unscored, and only what reads scores waits for them).
Each candidate carries its adapter version; the examples sent to the trainer
carry it, and ``RoundEnd.staleness`` reports how far behind they were.

Fault tolerance: every request has an id and stays pending until its reply
arrives (runtime/requests.py). When a role announces READY again (it was
restarted), its pending requests are re-sent -- after re-loading the served
adapter, for the generator. A reply whose id is no longer pending is a
duplicate and ignored, and the store's inserts are idempotent, so nothing is
lost or counted twice. A restarted coordinator resumes from the run store.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from constellation.algorithms import rationalize
from constellation.algorithms.selection import Sample, select_training_examples
from constellation.protocol import events as ev
from constellation.protocol import messages as m
from constellation.protocol.config import Config
from constellation.runtime.client import RoleClient
from constellation.runtime.manifest import write_manifest
from constellation.runtime.pairing import round_pairs
from constellation.runtime.evaluation import Closing, EvalLoop
from constellation.runtime.phase import Phase
from constellation.runtime.registry import resolve_task
from constellation.runtime.requests import CoordinatorError, Interrupted
from constellation.runtime.store import load_split

log = logging.getLogger("coordinator")

__all__ = ["Coordinator", "CoordinatorError", "Interrupted"]

TRAINING_DATA = ("examples", "pairs")  # what a trainer may declare it wants (roles/trainer.py)


@dataclass
class RoundData:
    """What a round's training phase produced, up to the training request."""

    phase: Phase
    selected: list[tuple[str, Sample]]  # (problem id, sample) chosen this round
    examples: list[m.TrainExample]
    pairs: list[m.PreferencePair]
    n_hinted: int  # problems retried with a hint
    n_rationalized: int
    started: float  # time.monotonic() when the round began
    waited: dict[str, float]  # the client's wait ledger when the round began


class Coordinator(EvalLoop):
    def __init__(self, cfg: Config, run_dir: Path, client: RoleClient, stop: threading.Event | None = None) -> None:
        super().__init__(cfg, run_dir, client, stop)
        self.critic_training: deque[m.CriticTrainRequest] = deque()  # asked, reply not recorded yet
        self.hint: Callable[[m.Problem], str] | None = None  # the task's hint_prompt, when rationalizing

    # ------------------------------------------------------------------
    # a training round
    # ------------------------------------------------------------------
    def _draw(self, round: int) -> tuple[list[m.Problem], random.Random]:
        """The round's training problems, and the rng its selection goes on
        with (the same for a round drawn again: prefetched, or resumed)."""
        rng = random.Random(zlib.crc32(f"{self.cfg.run.seed}/draw/{round}".encode()))
        return rng.sample(self.train_pool, min(self.cfg.coordinator.problems_per_round, len(self.train_pool))), rng

    def _train_round(self, round: int) -> None:
        """overlap = "none": sample, select, train, serve the new adapter."""
        data = self._round_data(round)
        self.store.set_round(round, "training")
        ready = self._train(round, data.phase, data.examples, data.pairs)
        self._serve(round, data, ready)

    def _round_data(self, round: int, scored: bool = True) -> RoundData:
        """Sample the round's training phase (a prefetched one is read back
        whole, or picked up under way), select, rationalize and build what the
        trainer wants. ``scored=False``: the selection reads no critic score,
        so the phase's scores may still be on their way."""
        started, waited = time.monotonic(), dict(self.timed.waited)
        self.store.set_round(round, "generating")
        problems, rng = self._draw(round)
        phase = self._sample("train", round, problems, self.cfg.coordinator.k, scored=scored)
        pools = phase.pools()
        frontier, selected = self._select(round, pools, rng)
        n_hinted, rationales = self._rationalize(round, phase, pools)
        examples, pairs = self._training_data(round, phase, frontier)
        return RoundData(phase, selected, examples, pairs, n_hinted, len(rationales), started, waited)

    def _serve(self, round: int, data: RoundData, ready: m.AdapterReady) -> None:
        """The generator serves the round's adapter; the round is trained."""
        loaded = self.request("generator", m.LoadAdapter(request_id=self._rid("load"), version=ready.version,
                                                          path=ready.path))
        self.served_version, self.served_path = loaded.version, ready.path
        self.store.set_round(round, "trained", adapter_version=ready.version, adapter_path=ready.path)
        pools, selected = data.phase.pools(), data.selected
        seconds = round_secs(data.started)
        waited = {role: rounded_seconds(t - data.waited.get(role, 0.0)) for role, t in self.timed.waited.items()}
        waited["coordinator"] = rounded_seconds(seconds - sum(waited.values()))
        self.store.event(ev.RoundEnd(
            round=round, n_problems=len(data.phase.problems), n_candidates=len(data.phase.candidates),
            n_visible_pass=sum(s.visible_pass for pool in pools.values() for s in pool), n_selected=len(selected),
            n_train_examples=len(data.examples), n_rationalize_attempts=data.n_hinted,
            n_rationalized=data.n_rationalized,
            train_precision=sum(s.heldout_correct for _, s in selected) / len(selected) if selected else None,
            adapter_load_seconds=loaded.seconds, seconds=seconds, waited=waited,
            train_adapter_version=min((c.adapter_version for c in data.phase.candidates.values()), default=None),
            staleness=(sum(round - 1 - s.adapter_version for _, s in selected) / len(selected)
                       if selected else None)))

    def _select(self, round: int, pools: dict[str, list[Sample]], rng: random.Random
                ) -> tuple[dict[str, list[Sample]], list[tuple[str, Sample]]]:
        """-> (the frontier pools, the selected (problem id, sample)s, recorded in the store).
        A curriculum at the frontier: problems the model already solves in
        (nearly) every sample teach it nothing new."""
        c = self.cfg.coordinator
        frontier = {pid: pool for pid, pool in pools.items()
                    if sum(s.visible_pass for s in pool) <= c.max_pass_rate * len(pool)}
        selected = [(pid, s) for pid, pool in frontier.items()
                    for s in select_training_examples(pool, c.selection, c.per_problem, rng)]
        self.store.add_selections(round, c.selection, [(pid, s.candidate_id) for pid, s in selected])
        return frontier, selected

    def _rationalize(self, round: int, phase: Phase, pools: dict[str, list[Sample]]) -> tuple[int, list[tuple[str, str]]]:
        """One hinted candidate per failed problem (algorithms/rationalize.py), in
        a phase of its own; a rationale that reached the answer is recorded as a
        selection of the original problem. -> (problems retried, [(problem id, candidate id)])."""
        if self.hint is None:
            return 0, []
        hinted = [rationalize.hinted_problem(phase.problems[pid], self.hint)
                  for pid in rationalize.failed_problems(pools)]
        if not hinted:
            return 0, []
        self.store.add_problems("rationalize", hinted)
        rationales = rationalize.rationalized(self._sample("rationalize", round, hinted, 1).pools())
        self.store.add_selections(round, self.cfg.coordinator.selection, rationales)  # trained without the hint
        return len(hinted), rationales

    def _training_data(self, round: int, phase: Phase, frontier: dict[str, list[Sample]]
                       ) -> tuple[list[m.TrainExample], list[m.PreferencePair]]:
        """What the trainer declared it wants in READY: STaR examples or DPO pairs."""
        wants = self.role_info.get("trainer", {}).get("wants", "examples")
        if wants not in TRAINING_DATA:
            raise CoordinatorError(f"the trainer wants {wants!r} in its READY; a trainer may want one of "
                                   f"{TRAINING_DATA}")
        if wants == "pairs":
            return [], self._preference_pairs(round, phase, frontier)
        return self._star_examples(round), []

    def _star_examples(self, round: int) -> list[m.TrainExample]:
        """Each round trains on everything selected so far (STaR's accumulated
        set), read back from the store so a restarted coordinator builds the same."""
        c = self.cfg.coordinator
        rounds = list(range(1, round + 1)) if c.accumulate else [round]
        seen: set[tuple[str, str]] = set()
        examples = []
        for pid, prompt, text, version in self.store.selected_examples(rounds, c.selection):
            if (pid, text) not in seen:
                seen.add((pid, text))
                examples.append(m.TrainExample(problem_id=pid, prompt=prompt, completion=text,
                                               adapter_version=version))
        return examples

    def _preference_pairs(self, round: int, phase: Phase, pools: dict[str, list[Sample]]) -> list[m.PreferencePair]:
        """DPO pairs (runtime/pairing.py); for self_judge the trainer scores the
        candidates with the policy it holds."""
        def judge(items: list[m.JudgeItem]) -> m.Judgments:
            return self.request("trainer", m.JudgeRequest(request_id=self._rid("judge"), round=round, items=items))

        prompts = {pid: phase.problems[pid].prompt for pid in pools}
        pairs, info = round_pairs(self.cfg.pairs, self.run_dir, round, pools, prompts, judge,
                                            seed=self.cfg.run.seed)
        self.store.event(ev.Pairs(round=round, **info))
        return pairs

    def _train(self, round: int, phase: Phase, examples: list[m.TrainExample],
               pairs: list[m.PreferencePair]) -> m.AdapterReady:
        """Trainer and critic train at the same time, in their own processes."""
        train = self._submit_trainer(round, examples, pairs)
        critic_req = self._submit_critic(round, phase)
        return self._await_training(train, critic_req)

    def _submit_trainer(self, round: int, examples: list[m.TrainExample],
                        pairs: list[m.PreferencePair]) -> m.TrainRequest:
        train = m.TrainRequest(request_id=self._rid("train"), round=round, examples=examples, pairs=pairs)
        self._submit("trainer", train)
        return train

    def _submit_critic(self, round: int, phase: Phase) -> m.CriticTrainRequest | None:
        """The critic learns the phase's verifier labels (None: no critic)."""
        if not self.use_critic:
            return None
        labels = [m.LabeledItem(candidate_id=cid, problem_id=v.problem_id, label=bool(v.heldout_correct),
                                visible_pass=v.status == "pass", text=self._critic_text(phase, v))
                  for cid, v in phase.verdicts.items() if v.heldout_correct is not None]
        critic_req = m.CriticTrainRequest(request_id=self._rid("critic-train"), round=round, labels=labels)
        self._submit("critic", critic_req)
        return critic_req

    def _await_training(self, train: m.TrainRequest, critic_req: m.CriticTrainRequest | None,
                        wait_critic: bool = True) -> m.AdapterReady:
        """The trainer's adapter, and the critic's training reply (or, with
        ``wait_critic=False``, leave that one to ``_collect_critic``)."""
        if critic_req is not None:
            self.critic_training.append(critic_req)
        self._pump(lambda: train.request_id in self._replies)
        ready: m.AdapterReady = self._replies.pop(train.request_id)
        self.store.event(ev.Trainer(round=train.round, version=ready.version, path=ready.path,
                                    n_examples=len(train.examples), n_pairs=len(train.pairs), metrics=ready.metrics,
                                    curve=ready.curve))
        if wait_critic:
            self._collect_critic(block=True)
        return ready

    def _collect_critic(self, block: bool) -> None:
        """Record the critic's training replies that have arrived, in the order
        they were asked for (``block``: wait for all of them)."""
        while self.critic_training:
            req = self.critic_training[0]
            if req.request_id not in self._replies and not block:
                return
            self._pump(lambda: req.request_id in self._replies)
            trained: m.CriticTrained = self._replies.pop(self.critic_training.popleft().request_id)
            self.critic_version = trained.version
            self.store.event(ev.Critic(round=req.round, version=trained.version, metrics=trained.metrics,
                                       curve=trained.curve))

    # ------------------------------------------------------------------
    # overlapped rounds (coordinator.overlap = "one_step")
    # ------------------------------------------------------------------
    def _one_step_rounds(self, status: dict[int, tuple[str, int | None, str | None]]) -> None:
        """Round r: select from its training phase (sampled during round r-1
        with adapter r-2), send the trainer its data, and while it trains:
        evaluate and guard round r-1 (adapter r-1), start the critic's
        training, sample round r+1's training phase (adapter r-1). Then serve
        adapter r. A resumed run redoes the round that was not trained; the
        store holds whatever its phases had already received.

        The generator never waits for the critic: phases are sampled unscored
        (the critic serves its requests in the order they were sent), a
        closing's events are written once its scores are in (``closings``),
        the critic's training reply is recorded when it arrives, and only a
        selection that reads scores waits for them."""
        base, opened = self._open_base(status, scored=False)
        closings: deque[Closing | Phase] = deque([opened])  # sampled, still to be scored
        due = None  # a trained round whose evaluation and guard are still to do
        for r in range(1, self.cfg.run.rounds + 1):
            st = status.get(r, ("",))[0]
            if st in ("done", "trained"):
                self._finish_closings(closings, base, block=True)
                if st == "done" and self._close_round(r, base, evaluate=False):
                    return
                due = r if st == "trained" else None
                continue
            data = self._round_data(r, scored=self._selection_reads_scores())
            self.store.set_round(r, "training")
            train = self._submit_trainer(r, data.examples, data.pairs)
            if due is not None:
                closings.append(self._open_close(due, evaluate=True, scored=False))
                if closings[-1].stops:
                    self._finish_closings(closings, base, block=True)
                    self._collect_critic(block=True)
                    self._unawaited.add(train.request_id)  # stopped early: round r is not served
                    return
            self._collect_critic(block=False)
            critic_req = self._submit_critic(r, data.phase)
            if r < self.cfg.run.rounds:
                self._sample("train", r + 1, self._draw(r + 1)[0], self.cfg.coordinator.k, scored=False)
            self._finish_closings(closings, base, block=False)
            ready = self._await_training(train, critic_req, wait_critic=False)
            closings.append(data.phase)  # its scores may still be on their way: nothing reads them now
            self._serve(r, data, ready)
            due = r
        if due is not None:  # the last evaluation: sampled while the critic catches up
            closings.append(self._open_close(due, evaluate=True, scored=False))
        self._collect_critic(block=True)
        self._finish_closings(closings, base, block=True)

    def _finish_closings(self, closings: deque[Closing | Phase], base: dict[int, float], block: bool) -> None:
        """In the order they were opened, write the events of the closings
        whose phases are scored and let go of the scored training phases
        (``block``: wait for the scores of all of them)."""
        while closings and (block or closings[0].complete(self.use_critic)):
            item = closings.popleft()
            if isinstance(item, Phase):
                self._await_scores(item)
            elif item.round == 0:
                self._finish_base(item)
            else:
                self._finish_close(item, base)

    def _selection_reads_scores(self) -> bool:
        """Whether building a round's training data reads critic scores (the
        selection policy, or DPO pairs ranked by the critic)."""
        wants_pairs = self.role_info.get("trainer", {}).get("wants", "examples") == "pairs"
        return self.use_critic and (self.cfg.coordinator.selection in ("critic", "critic_vote")
                                    or (wants_pairs and self.cfg.pairs.source == "critic"))

    # ------------------------------------------------------------------
    # the run
    # ------------------------------------------------------------------
    def run(self) -> bool:
        """All rounds. A restarted coordinator resumes from the run store:
        finished rounds are skipped, a partial phase reuses what was recorded."""
        cfg = self.cfg
        status = self.store.round_status()
        self.store.event(ev.RunStart(run_dir=str(self.run_dir), rounds=cfg.run.rounds, seed=cfg.run.seed,
                                     resumed=bool(status), manifest=write_manifest(cfg, self.run_dir)))
        self.wait_for_workers()
        self._load_task()
        self._serve_latest_adapter(status)
        if cfg.coordinator.overlap == "one_step":
            self._one_step_rounds(status)
        else:
            base = self._base_round(status)
            for r in range(1, cfg.run.rounds + 1):
                st = status.get(r, ("",))[0]
                if st not in ("done", "trained"):
                    self._train_round(r)
                if self._close_round(r, base, evaluate=st != "done"):
                    break
        self.store.event(ev.RunEnd(ok=True, counters=dict(self.counters), busy_seconds=rounded_ledger(self.timed.busy),
                                   waited_seconds=rounded_ledger(self.timed.waited)))
        return True

    def _load_task(self) -> None:
        """The task module, the run's split (made before the roles started), the
        rationalization hint and the validation split."""
        self.task = resolve_task(self.cfg.task.impl)
        self.split = load_split(self.run_dir)
        if self.cfg.coordinator.rationalize:
            self.hint, why_not = rationalize.hint_function(self.task, self.split.train)
            if why_not:
                log.warning("coordinator.rationalize is on, but %s: going on without rationalization", why_not)
            self.store.event(ev.Rationalize(enabled=self.hint is not None, reason=why_not))
        for name in ("labeled", "train", "eval"):
            self.store.add_problems(name, getattr(self.split, name))
        self._split_validation()

    def _serve_latest_adapter(self, status: dict[int, tuple[str, int | None, str | None]]) -> None:
        """After a restart, the generator must serve the latest adapter (it may have restarted too)."""
        trained = [(r, v, p) for r, (st, v, p) in status.items() if r > 0 and st in ("trained", "done")]
        if trained:
            _, version, path = max(trained)
            self.request("generator", m.LoadAdapter(request_id=self._rid("load"), version=version, path=path))
            self.served_version, self.served_path = version, path

    def close(self) -> None:
        if self.auditor is not None:
            self.auditor.close()
        self.store.close()


def round_secs(t0: float) -> float:
    return round(time.monotonic() - t0, 2)


def rounded_seconds(seconds: float) -> float:
    return round(seconds, 2)


def rounded_ledger(ledger: dict[str, float]) -> dict[str, float]:
    return {role: rounded_seconds(t) for role, t in ledger.items()}
