"""Closing a round: evaluate the served model, let the collapse guard read the
validation split, mark the round done (the part of the coordinator between
"the adapter is served" and "the next round may start").

A closing has two halves, so that the generator need not wait for the critic:

  ``_open_close``    sample the evaluation and the validation phases (the
                     generator's and the verifier's work) and take the guard's
                     decision, which reads verdicts only;
  ``_finish_close``  once the critic has scored both phases, write the Eval
                     and Guard events (selection by critic score, the critic's
                     mean) and mark the round done.

``coordinator.overlap = "none"`` runs the two halves back to back
(``_close_round``), exactly as before they were split. ``"one_step"`` puts
other generator work between them (coordinator.py, ``_one_step_rounds``); the
critic serves its requests in the order they were sent, so the scores of a
phase sampled before a critic training request come from the critic before
that training, whatever happens in between.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from constellation.algorithms.guard import CollapseGuard, Decision, Reading, diversity
from constellation.algorithms.passk import crossover, mean_pass_at_k
from constellation.algorithms.selection import POLICIES, agreement, group_results, selection_accuracy, selection_table
from constellation.protocol import events as ev
from constellation.runtime.phase import Phase
from constellation.runtime.requests import CoordinatorError
from constellation.runtime.sampler import PhaseLoop

log = logging.getLogger("coordinator")


@dataclass
class Closing:
    """A round's evaluation and guard reading, sampled; events still to write."""

    round: int
    eval: Phase | None  # None: the evaluation is recorded already (a resumed run)
    val: Phase | None  # None: no guard, or its reading is recorded already
    reading: Reading | None  # the guard's reading without the critic's mean (None: no guard)
    decision: Decision | None

    @property
    def stops(self) -> bool:
        return self.decision is not None and self.decision.stop

    def complete(self, use_critic: bool) -> bool:
        """Both phases verified and, with a critic, scored (as ``Phase.complete``):
        the events can be written without a wait."""
        return all(p is None or p.complete(use_critic) for p in (self.eval, self.val))


class EvalLoop(PhaseLoop):
    critic_version = 0  # the critic version that scores what is sampled now (coordinator.py updates it)

    # ------------------------------------------------------------------
    # a closing, in two halves
    # ------------------------------------------------------------------
    def _close_round(self, r: int, base: dict[int, float], evaluate: bool) -> bool:
        """Evaluate a trained round (unless its evaluation is recorded), let the
        guard read it, mark it done -> whether the run stops early here."""
        return self._finish_close(self._open_close(r, evaluate), base)

    def _open_close(self, r: int, evaluate: bool, scored: bool = True) -> Closing:
        """Sample round r's evaluation (if ``evaluate``) and validation phases,
        scored or not (``scored=False``: the critic's scores arrive later), and
        take the guard's decision."""
        e = self.cfg.eval
        phase = self._sample("eval", r, self.split.eval, e.n_samples, scored=scored) if evaluate else None
        if not self.val_problems:
            return Closing(r, phase, None, None, None)
        recorded = self.store.last_event(ev.Guard, r)
        if recorded is not None:
            nan_if_null = float("nan") if recorded.diversity is None else recorded.diversity
            reading = Reading(r, recorded.val_pass_at_1, nan_if_null, recorded.critic_mean)
            return Closing(r, phase, None, reading, self.guard.update(reading))  # read back: no event
        val = self._sample("val", r, self.val_problems, self.cfg.guard.val_samples, scored=scored)
        pools = val.pools()
        samples = [s for pool in pools.values() for s in pool]
        reading = Reading(r, val_pass_at_1=sum(s.heldout_correct for s in samples) / len(samples),
                          diversity=diversity([[s.heldout_outputs for s in pool] for pool in pools.values()]))
        return Closing(r, phase, val, reading, self.guard.update(reading))

    def _finish_close(self, closing: Closing, base: dict[int, float] | None,
                      **round_fields: int | str) -> bool:
        """Write the closing's events once the critic has scored its phases,
        mark the round done (``round_fields``: set_round's adapter fields) ->
        whether the run stops early here."""
        r = closing.round
        if closing.eval is not None:
            self._eval_event(r, self._await_scores(closing.eval), base)
        if closing.val is not None:
            self._guard_event(closing, self._await_scores(closing.val))
        self.store.set_round(r, "done", **round_fields)
        if not closing.stops:
            return False
        decision = closing.decision
        if self.store.last_event(ev.EarlyStop, r) is None:
            self.store.event(ev.EarlyStop(round=r, reason=decision.reason, best_round=decision.best_round,
                                          rounds_skipped=self.cfg.run.rounds - r))
        log.warning("early stop after round %d: %s", r, decision.reason)
        return True

    # ------------------------------------------------------------------
    # the events
    # ------------------------------------------------------------------
    def _eval_event(self, round: int, phase: Phase, base_pass: dict[int, float] | None) -> None:
        """The Eval event (pass@k, every selection policy on the same
        candidates) and the ZPD verdict (base) or the crossover (a round)."""
        e = self.cfg.eval
        pools = phase.pools()
        pass_at_k = pass_at_k_of(phase, e.ks)
        policies = [pol for pol in POLICIES if self.use_critic or "critic" not in pol]
        # every policy on the same candidates, at several k, split by agree/disagree
        ks = [k for k in e.selection_ks if k <= e.n_samples]
        table = selection_table(group_results(pools, ks, policies))
        # the one-line figure at selection_k: read from the table when it has that k
        # ("all" averages the same groups as selection_accuracy), else computed
        sel_k, plist = e.selection_k, list(pools.values())
        sel = ({pol: table[str(sel_k)]["all"][pol] for pol in policies} if str(sel_k) in table
               else {pol: selection_accuracy(plist, sel_k, pol) for pol in policies})
        n_agree = sum(agreement([s for s in p if s.visible_pass]) is True for p in plist)
        self.store.event(ev.Eval(
            round=round, model="base" if round == 0 else f"round-{round}", adapter_version=phase.adapter_version,
            n_problems=len(plist), n_samples=e.n_samples, pass_at_k={str(k): v for k, v in pass_at_k.items()},
            selection_k=sel_k, selection_accuracy=sel, n_agree=n_agree, selection=table,
            critic_version=phase.critic_version if phase.scores else self.critic_version))
        if round == 0:
            p1 = pass_at_k[1]
            verdict = ("in ZPD" if e.zpd_low <= p1 <= e.zpd_high else
                       "below ZPD (too hard)" if p1 < e.zpd_low else "above ZPD (too easy)")
            self.store.event(ev.Zpd(round=0, pass_at_1=p1, low=e.zpd_low, high=e.zpd_high,
                                    verdict=f"{verdict} at {p1:.0%}"))
        else:
            self.store.event(ev.Crossover(round=round, k_star=crossover(base_pass, pass_at_k)))

    def _guard_event(self, closing: Closing, val: Phase) -> None:
        """The Guard event: the reading the decision was taken on, with the
        critic's mean score of the validation samples (reported, not decisive)."""
        reading, decision = closing.reading, closing.decision
        scores = [s.score for pool in val.pools().values() for s in pool if s.score is not None]
        self.store.event(ev.Guard(
            round=closing.round, val_pass_at_1=reading.val_pass_at_1, diversity=reading.diversity,
            critic_mean=sum(scores) / len(scores) if scores else None, n_problems=len(self.val_problems),
            n_samples=self.cfg.guard.val_samples, stop=decision.stop, reason=decision.reason,
            falls=decision.falls, diversity_ratio=decision.diversity_ratio, best_round=decision.best_round))

    # ------------------------------------------------------------------
    # the base (round 0) and the validation split
    # ------------------------------------------------------------------
    def _open_base(self, status: dict[int, tuple[str, int | None, str | None]],
                   scored: bool = True) -> tuple[dict[int, float], Closing]:
        """Round 0: sample the base's evaluation (or read the recorded one) ->
        (its pass@k, its closing to finish)."""
        if status.get(0, ("",))[0] == "done":
            recorded = self.store.last_event(ev.Eval, 0)
            return {int(k): v for k, v in recorded.pass_at_k.items()}, self._open_close(0, evaluate=False)
        self.store.set_round(0, "evaluating")
        closing = self._open_close(0, evaluate=True, scored=scored)
        return pass_at_k_of(closing.eval, self.cfg.eval.ks), closing

    def _finish_base(self, closing: Closing) -> None:
        self._finish_close(closing, None, adapter_version=0, adapter_path="")

    def _base_round(self, status: dict[int, tuple[str, int | None, str | None]]) -> dict[int, float]:
        """Round 0, closed: evaluate the base (or read its recorded evaluation) -> its pass@k."""
        base, closing = self._open_base(status)
        self._finish_base(closing)
        return base

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


def pass_at_k_of(phase: Phase, ks: list[int]) -> dict[int, float]:
    """A phase's unbiased pass@k, from its verdicts (no critic score needed)."""
    counts = [(len(pool), sum(s.heldout_correct for s in pool)) for pool in phase.pools().values()]
    return mean_pass_at_k(counts, ks)
