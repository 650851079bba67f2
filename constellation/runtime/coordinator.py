"""The coordinator: runs rounds, routes work, selects, evaluates.

It is the hub. Worker roles (generator, verifier, critic, trainer) connect to
its router socket; it is the only process that writes the run store and the
only one that makes training decisions.

Streaming: generation is cut into small GenerateRequests (a few problems
each) with ``window`` of them in flight. Each batch of candidates goes to the
verifier as soon as it arrives, and each batch of verdicts to the critic
(the critic reads the candidate's outputs on held-out inputs, which the
verifier computes, so it scores right after verification).

Fault tolerance: every request has an id and stays in ``pending`` until its
reply arrives. When a role announces READY again (it was restarted), its
pending requests are re-sent -- after re-loading the served adapter, for the
generator. A reply whose id is no longer pending is a duplicate and ignored,
and the store's inserts are idempotent, so nothing is lost or counted twice.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import zlib
from collections import defaultdict, deque
from pathlib import Path
from typing import Any, Callable

from constellation.protocol import messages as m
from constellation.algorithms import pairs as pairs_lib
from constellation.algorithms import rationalize
from constellation.protocol.config import Config
from constellation.algorithms.guard import CollapseGuard, Reading, diversity
from constellation.algorithms.passk import crossover, mean_pass_at_k
from constellation.runtime.registry import resolve_task
from constellation.algorithms.selection import (POLICIES, Scored, agreement, group_results, select_training_examples,
                                     selection_accuracy, selection_table)
from constellation.runtime.requests import CoordinatorError, Interrupted, RequestLoop
from constellation.runtime.store import RunStore, candidate_order, load_split
from constellation.protocol.transport import Link

log = logging.getLogger("coordinator")

__all__ = ["Coordinator", "CoordinatorError", "Interrupted"]


class Coordinator(RequestLoop):
    def __init__(self, cfg: Config, run_dir: Path, hub: Link, stop: threading.Event | None = None) -> None:
        super().__init__(hub, stop or threading.Event(), cfg.coordinator.request_timeout)
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.store = RunStore(run_dir)
        self.use_critic = cfg.critic.impl != "none"
        self.gen_queue: deque[m.GenerateRequest] = deque()
        self._handlers: dict[type, Callable[[Any], None]] = {
            m.Candidates: self._on_candidates, m.Verdicts: self._on_verdicts, m.Scores: self._on_scores,
            m.AdapterReady: self._on_reply, m.AdapterLoaded: self._on_reply, m.CriticTrained: self._on_reply,
            m.Judgments: self._on_reply,
        }
        # state of the current phase (one round's generation, or one evaluation)
        self.problems: dict[str, m.Problem] = {}
        self.phase, self.round = "", 0
        self.candidates: dict[str, m.Candidate] = {}
        self.verdicts: dict[str, m.Verdict] = {}
        self.scores: dict[str, float] = {}
        self.served_version, self.served_path = 0, ""  # adapter the generator serves
        self.critic_version = 0
        self.hint: Callable[[m.Problem], str] | None = None  # the task's hint_prompt, when rationalizing
        self._last_progress = 0.0
        self._expected = 0

    # ------------------------------------------------------------------
    # hooks of the request loop (constellation/runtime/requests.py)
    # ------------------------------------------------------------------
    def _before_poll(self) -> None:
        self._fill_generation_window()

    def _after_dispatch(self) -> None:
        self._report_progress()

    def _on_role_restart(self, role: str, pid: int, resent: list[str]) -> None:
        """Before the restarted role's requests are re-sent: record it, and
        give a restarted generator back the adapter it served (the dealer keeps
        order, so the reload arrives before any re-sent generation)."""
        self.store.event("role_restart", self.round, role=role, pid=pid, resent=len(resent))
        if role == "generator" and self.served_version:
            load = m.LoadAdapter(request_id=self._rid("reload"), version=self.served_version, path=self.served_path)
            self._submit("generator", load)
            self._unawaited.add(load.request_id)

    def _fill_generation_window(self) -> None:
        in_flight = sum(1 for p in self.pending.values() if isinstance(p.msg, m.GenerateRequest))
        while self.gen_queue and in_flight < self.cfg.coordinator.window:
            self._submit("generator", self.gen_queue.popleft())
            in_flight += 1

    # ------------------------------------------------------------------
    # handlers
    # ------------------------------------------------------------------
    def _on_candidates(self, msg: m.Candidates) -> None:
        fresh = [c for c in msg.items if c.id not in self.candidates]
        self.store.add_candidates(self.round, self.phase, fresh)
        by_problem: dict[str, list[m.Candidate]] = defaultdict(list)
        for c in fresh:
            if c.adapter_version != self.served_version:
                raise CoordinatorError(f"candidate {c.id} came from adapter v{c.adapter_version}, "
                                       f"expected v{self.served_version}")
            self.candidates[c.id] = c
            by_problem[c.problem_id].append(c)
        for pid, cands in by_problem.items():
            self._submit("verifier", m.VerifyRequest(request_id=self._rid("verify"), problem=self.problems[pid],
                                                     candidates=cands))
        self.counters["candidates"] += len(fresh)

    def _on_verdicts(self, msg: m.Verdicts) -> None:
        fresh = [v for v in msg.items if v.candidate_id not in self.verdicts]
        self.store.add_verdicts(fresh)
        for v in fresh:
            self.verdicts[v.candidate_id] = v
        if self.use_critic and fresh:
            self._submit("critic", m.ScoreRequest(request_id=self._rid("score"), items=self._score_items(fresh)))

    def _on_scores(self, msg: m.Scores) -> None:
        fresh = [(c, s) for c, s in zip(msg.candidate_ids, msg.scores) if c not in self.scores]
        self.store.add_scores([c for c, _ in fresh], [s for _, s in fresh], msg.critic_version)
        self.scores.update(fresh)

    def _route_unfinished(self) -> None:
        """Send recorded-but-unverified candidates to the verifier and
        verified-but-unscored ones to the critic (after a coordinator restart)."""
        by_problem: dict[str, list[m.Candidate]] = defaultdict(list)
        for cid, cand in self.candidates.items():
            if cid not in self.verdicts:
                by_problem[cand.problem_id].append(cand)
        for pid, cands in by_problem.items():
            self._submit("verifier", m.VerifyRequest(request_id=self._rid("verify"), problem=self.problems[pid],
                                                     candidates=cands))
        unscored = [v for cid, v in self.verdicts.items() if cid not in self.scores]
        if self.use_critic and unscored:
            self._submit("critic", m.ScoreRequest(request_id=self._rid("score"), items=self._score_items(unscored)))

    def _score_items(self, verdicts: list[m.Verdict]) -> list[m.ScoreItem]:
        return [m.ScoreItem(candidate_id=v.candidate_id, problem_id=v.problem_id,
                            text=self.task.critic_text(self.problems[v.problem_id],
                                                       self.candidates[v.candidate_id].text, v.heldout_outputs))
                for v in verdicts]

    def _report_progress(self) -> None:
        now = time.monotonic()
        if now - self._last_progress < 1.0 or not self.problems:
            return
        self._last_progress = now
        self.store.event("progress", self.round, phase=self.phase, done=len(self.verdicts), total=self._expected,
                         candidates=len(self.candidates), scored=len(self.scores),
                         pending=len(self.pending), queued=len(self.gen_queue))

    # ------------------------------------------------------------------
    # phases
    # ------------------------------------------------------------------
    def _sample(self, phase: str, round: int, problems: list[m.Problem], k: int) -> dict[str, list[Scored]]:
        """Generate k candidates per problem, verify and score them all.
        Returns one pool of Scored candidates per problem id."""
        self.phase, self.round = phase, round
        self.problems = {p.id: p for p in problems}
        self._expected = len(problems) * k
        # resume: what a previous coordinator already recorded for this phase
        cands, verdicts, scores = self.store.load_phase(round, phase)
        self.candidates = {c.id: c for c in cands}
        self.verdicts = {v.candidate_id: v for v in verdicts}
        self.scores = scores
        have = defaultdict(int)
        for c in cands:
            have[c.problem_id] += 1
        c = self.cfg.coordinator
        s = self.cfg.sampling
        for i in range(0, len(problems), c.request_problems):
            chunk = problems[i:i + c.request_problems]
            if all(have[p.id] >= k for p in chunk):
                continue
            seed = zlib.crc32(f"{self.cfg.run.seed}/{phase}/{round}/{i}".encode())
            self.gen_queue.append(m.GenerateRequest(
                request_id=self._rid("generate"), problems=chunk, k=k,
                sampling=m.Sampling(temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
                                    seed=seed),
                adapter_version=self.served_version, candidate_prefix=f"{phase}/{round}"))
        if cands:
            log.info("resuming %s round %d: %d candidates, %d verdicts, %d scores already recorded",
                     phase, round, len(cands), len(verdicts), len(scores))
            self._route_unfinished()

        def complete() -> bool:
            return (len(self.verdicts) >= self._expected and not self.gen_queue
                    and (not self.use_critic or len(self.scores) >= self._expected))

        t0 = time.monotonic()
        self._pump(complete)
        self._report_progress()
        pools: dict[str, list[Scored]] = defaultdict(list)
        for cid in sorted(self.candidates, key=candidate_order):
            cand, v = self.candidates[cid], self.verdicts[cid]
            pools[cand.problem_id].append(Scored(
                candidate_id=cid, visible_pass=v.status == "pass", heldout_correct=bool(v.heldout_correct),
                heldout_outputs=None if v.heldout_outputs is None else tuple(v.heldout_outputs),
                score=self.scores.get(cid), text=cand.text))
        log.info("%s round %d: %d candidates in %.1fs", phase, round, len(self.candidates), time.monotonic() - t0)
        return pools

    def _evaluate(self, round: int, base_pass: dict[int, float] | None) -> dict[int, float]:
        e = self.cfg.eval
        pools = self._sample("eval", round, self.split.eval, e.n_samples)
        counts = [(len(pool), sum(s.heldout_correct for s in pool)) for pool in pools.values()]
        pass_at_k = mean_pass_at_k(counts, e.ks)
        sel_k = e.selection_k
        plist = list(pools.values())
        agree = [p for p in plist if agreement([s for s in p if s.visible_pass]) is True]
        policies = [pol for pol in POLICIES if self.use_critic or "critic" not in pol]
        # every policy on the same candidates, at several k, split by agree/disagree
        ks = [k for k in e.selection_ks if k <= e.n_samples]
        table = selection_table(group_results(pools, ks, policies))
        # the one-line figure at selection_k: read from the table when it has that k
        # ("all" averages the same groups as selection_accuracy), else computed
        sel = ({pol: table[str(sel_k)]["all"][pol] for pol in policies} if str(sel_k) in table
               else {pol: selection_accuracy(plist, sel_k, pol) for pol in policies})
        model = "base" if round == 0 else f"round-{round}"
        self.store.event("eval", round, model=model, adapter_version=self.served_version,
                         n_problems=len(plist), n_samples=e.n_samples,
                         pass_at_k={str(k): v for k, v in pass_at_k.items()},
                         selection_k=sel_k, selection_accuracy=sel, n_agree=len(agree),
                         selection=table, critic_version=self.critic_version)
        if round == 0:
            p1 = pass_at_k[1]
            verdict = ("in ZPD" if e.zpd_low <= p1 <= e.zpd_high else
                       "below ZPD (too hard)" if p1 < e.zpd_low else "above ZPD (too easy)")
            self.store.event("zpd", 0, pass_at_1=p1, low=e.zpd_low, high=e.zpd_high,
                             verdict=f"{verdict} at {p1:.0%}")
        else:
            self.store.event("crossover", round, k_star=crossover(base_pass, pass_at_k))
        return pass_at_k

    def _train_round(self, round: int) -> None:
        c = self.cfg.coordinator
        self.store.set_round(round, "generating")
        t0 = time.monotonic()
        rng = random.Random(zlib.crc32(f"{self.cfg.run.seed}/draw/{round}".encode()))
        problems = rng.sample(self.train_pool, min(c.problems_per_round, len(self.train_pool)))
        pools = self._sample("train", round, problems, c.k)

        # a curriculum at the frontier: problems the model already solves in
        # (nearly) every sample teach it nothing new
        frontier = {pid: pool for pid, pool in pools.items()
                    if sum(s.visible_pass for s in pool) <= c.max_pass_rate * len(pool)}
        selected = [(pid, s) for pid, pool in frontier.items()
                    for s in select_training_examples(pool, c.selection, c.per_problem, rng)]
        self.store.add_selections(round, c.selection, [(pid, s.candidate_id) for pid, s in selected])
        n_hinted, rationales = self._rationalize(round, pools) if self.hint else (0, [])
        self.store.add_selections(round, c.selection, rationales)  # trained on with the original prompt
        # STaR: each round trains from the base on everything selected so far
        # (read back from the store, so a restarted coordinator builds the same set)
        rounds = list(range(1, round + 1)) if c.accumulate else [round]
        seen: set[tuple[str, str]] = set()
        examples = []
        for pid, prompt, text in self.store.selected_examples(rounds, c.selection):
            if (pid, text) not in seen:
                seen.add((pid, text))
                examples.append(m.TrainExample(problem_id=pid, prompt=prompt, completion=text))
        pairs: list[m.PreferencePair] = []
        if self.cfg.trainer.impl == "dpo":  # DPO trains on pairs only
            pairs, examples = self._preference_pairs(round, frontier), []
        n_pass = sum(s.visible_pass for pool in pools.values() for s in pool)
        precision = sum(s.heldout_correct for _, s in selected) / len(selected) if selected else None

        # trainer and critic train at the same time, in their own processes
        self.store.set_round(round, "training")
        train = m.TrainRequest(request_id=self._rid("train"), round=round, examples=examples, pairs=pairs)
        self._submit("trainer", train)
        critic_req = None
        if self.use_critic:
            labels = [m.LabeledItem(candidate_id=cid, problem_id=v.problem_id, label=bool(v.heldout_correct),
                                    visible_pass=v.status == "pass", text=self.task.critic_text(self.problems[v.problem_id],
                                                               self.candidates[cid].text, v.heldout_outputs))
                      for cid, v in self.verdicts.items() if v.heldout_correct is not None]
            critic_req = m.CriticTrainRequest(request_id=self._rid("critic-train"), round=round, labels=labels)
            self._submit("critic", critic_req)
        self.phase = "train"
        self._pump(lambda: train.request_id in self._replies
                   and (critic_req is None or critic_req.request_id in self._replies))
        ready: m.AdapterReady = self._replies.pop(train.request_id)
        self.store.event("trainer", round, **{"version": ready.version, "path": ready.path,
                                              "n_examples": len(examples), "n_pairs": len(pairs),
                                              **ready.metrics})
        if critic_req is not None:
            trained: m.CriticTrained = self._replies.pop(critic_req.request_id)
            self.critic_version = trained.version
            self.store.event("critic", round, **{"version": trained.version, **trained.metrics})

        loaded = self._request("generator", m.LoadAdapter(request_id=self._rid("load"), version=ready.version,
                                                          path=ready.path))
        self.served_version, self.served_path = loaded.version, ready.path
        self.store.set_round(round, "trained", adapter_version=ready.version, adapter_path=ready.path)
        self.store.event("round_end", round, n_problems=len(problems), n_candidates=len(self.candidates),
                         n_visible_pass=n_pass, n_selected=len(selected), n_train_examples=len(examples),
                         n_rationalize_attempts=n_hinted, n_rationalized=len(rationales),
                         train_precision=precision,
                         adapter_load_seconds=loaded.seconds, seconds=round_secs(t0))

    def _rationalize(self, round: int, pools: dict[str, list[Scored]]) -> tuple[int, list[tuple[str, str]]]:
        """One hinted candidate per failed problem (constellation/algorithms/rationalize.py).
        -> (problems retried, [(original problem id, rationale candidate id)]).
        The train phase's state is put back afterwards: the critic trains on it."""
        hinted = [rationalize.hinted_problem(self.problems[pid], self.hint)
                  for pid in rationalize.failed_problems(pools)]
        if not hinted:
            return 0, []
        saved = (self.phase, self.problems, self.candidates, self.verdicts, self.scores)
        self.store.add_problems("rationalize", hinted)
        hinted_pools = self._sample("rationalize", round, hinted, 1)
        self.phase, self.problems, self.candidates, self.verdicts, self.scores = saved
        return len(hinted), rationalize.rationalized(hinted_pools)

    def _preference_pairs(self, round: int, pools: dict[str, list[Scored]]) -> list[m.PreferencePair]:
        """DPO pairs (constellation.algorithms.pairs.round_pairs); for self_judge the
        trainer scores the candidates with the policy it holds."""
        def judge(items: list[m.JudgeItem]) -> m.Judgments:
            return self._request("trainer", m.JudgeRequest(request_id=self._rid("judge"), round=round, items=items))

        prompts = {pid: self.problems[pid].prompt for pid in pools}
        pairs, info = pairs_lib.round_pairs(self.cfg.pairs, self.run_dir, round, pools, prompts, judge,
                                            seed=self.cfg.run.seed)
        self.store.event("pairs", round, **info)
        return pairs

    # ------------------------------------------------------------------
    def run(self) -> bool:
        """All rounds. A restarted coordinator resumes from the run store:
        finished rounds are skipped, a partial phase reuses what was recorded."""
        cfg = self.cfg
        status = self.store.round_status()
        self.store.event("run_start", run_dir=str(self.run_dir), rounds=cfg.run.rounds, seed=cfg.run.seed,
                         resumed=bool(status))
        self._wait_for_workers()
        self.task = resolve_task(cfg.task.impl)
        self.split = load_split(self.run_dir)
        if cfg.coordinator.rationalize:
            self.hint, why_not = rationalize.hint_function(self.task, self.split.train)
            if why_not:
                log.warning("coordinator.rationalize is on, but %s: going on without rationalization", why_not)
            self.store.event("rationalize", enabled=self.hint is not None, reason=why_not)
        for name in ("labeled", "train", "eval"):
            self.store.add_problems(name, getattr(self.split, name))
        self._split_validation()
        trained = [(r, v, p) for r, (st, v, p) in status.items() if r > 0 and st in ("trained", "done")]
        if trained:  # the generator must serve the latest adapter (it may have restarted too)
            _, version, path = max(trained)
            self._request("generator", m.LoadAdapter(request_id=self._rid("load"), version=version, path=path))
            self.served_version, self.served_path = version, path
        if status.get(0, ("",))[0] == "done":
            base = {int(k): v for k, v in self.store.last_event("eval", 0)["pass_at_k"].items()}
            self._guard_round(0)
        else:
            self.store.set_round(0, "evaluating")
            base = self._evaluate(0, None)
            self._guard_round(0)
            self.store.set_round(0, "done", adapter_version=0, adapter_path="")
        for r in range(1, cfg.run.rounds + 1):
            st = status.get(r, ("",))[0]
            if st != "done":
                if st != "trained":
                    self._train_round(r)
                self._evaluate(r, base)
            decision = self._guard_round(r)
            self.store.set_round(r, "done")
            if decision is not None and decision.stop:
                if self.store.last_event("early_stop", r) is None:
                    self.store.event("early_stop", r, reason=decision.reason, best_round=decision.best_round,
                                     rounds_skipped=cfg.run.rounds - r)
                log.warning("early stop after round %d: %s", r, decision.reason)
                break
        self.store.event("run_end", ok=True, counters=dict(self.counters))
        return True

    # ------------------------------------------------------------------
    # collapse guard
    # ------------------------------------------------------------------
    def _split_validation(self) -> None:
        """The validation problems are the last ``guard.val_problems`` of the
        training pool; training never draws them."""
        g = self.cfg.guard
        n_val = g.val_problems if g.enabled else 0
        if n_val < 0 or n_val >= len(self.split.train):
            raise CoordinatorError(f"guard.val_problems = {n_val} must be >= 0 and below the training pool "
                                   f"size ({len(self.split.train)} problems, task.n_train); lower guard.val_problems or "
                                   f"set guard.enabled=false")
        cut = len(self.split.train) - n_val
        self.train_pool, self.val_problems = self.split.train[:cut], self.split.train[cut:]
        self.guard = CollapseGuard(patience=g.patience, tolerance=g.tolerance, diversity_floor=g.diversity_floor)

    def _guard_round(self, round: int):
        """Measure the validation split with the served model (or replay the
        recorded reading after a restart) and let the guard decide."""
        if not self.val_problems:
            return None
        recorded = self.store.last_event("guard", round)
        if recorded is None:
            pools = self._sample("val", round, self.val_problems, self.cfg.guard.val_samples)
            samples = [s for pool in pools.values() for s in pool]
            scores = [s.score for s in samples if s.score is not None]
            reading = Reading(round, val_pass_at_1=sum(s.heldout_correct for s in samples) / len(samples),
                              diversity=diversity([[s.heldout_outputs for s in pool] for pool in pools.values()]),
                              critic_mean=sum(scores) / len(scores) if scores else None)
        else:
            reading = Reading(round, recorded["val_pass_at_1"], recorded["diversity"], recorded.get("critic_mean"))
        decision = self.guard.update(reading)
        if recorded is None:
            self.store.event("guard", round, val_pass_at_1=reading.val_pass_at_1, diversity=reading.diversity,
                             critic_mean=reading.critic_mean, n_problems=len(self.val_problems),
                             n_samples=self.cfg.guard.val_samples, stop=decision.stop, reason=decision.reason,
                             falls=decision.falls, diversity_ratio=decision.diversity_ratio,
                             best_round=decision.best_round)
        return decision

    def close(self) -> None:
        self.store.close()


def round_secs(t0: float) -> float:
    return round(time.monotonic() - t0, 2)
