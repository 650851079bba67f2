"""Selection policies: which of k sampled programs for ONE problem to keep.

Every candidate has already been run by the exact verifier on the problem's
visible examples (``visible_pass``) and on held-out inputs whose outputs the
model never sees (``heldout_outputs``; ``heldout_correct`` compares them with
the truth). A policy may look at visible results, held-out *outputs* and critic
scores, never at ``heldout_correct``: that is the label we measure it against.
The one exception is "oracle", the upper bound (pass@k of the group).

Policies (all choose among visible-pass candidates only):
  best_of_k    a uniformly random visible-pass candidate: what the verifier
               alone gives.
  critic       the highest critic score P(correct).
  majority     the most common held-out output vector (self-consistency).
  critic_vote  like majority, but each vote weighs its critic score.
  oracle       correct if any candidate in the group is held-out correct.

Conventions:
  * Ties. ``select_*`` are deterministic: among tied winners the smallest
    ``candidate_id`` (string order) wins. Candidate ids follow sampling order,
    so this is an arbitrary but unbiased pick. ``expected_accuracy_*`` instead
    return the exact expectation under a uniformly random tie-break, which
    is what ``selection_accuracy`` reports (lower variance, no id artefacts).
    For majority votes the tie-break is uniform over tied *classes*.
  * Missing critic scores (None or NaN) rank below every real score; if no
    visible-pass candidate has one, "critic" falls back to best_of_k and
    "critic_vote" to plain majority.
  * A visible-pass candidate without a held-out output vector does not vote;
    if none has one, "majority" and "critic_vote" fall back to best_of_k.
    (Single ``None`` entries inside a vector are fine: the input failed, and
    that failure is part of the vector.)
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from constellation.protocol.messages import Candidate, Verdict

# two vote weights closer than this are a tie (float noise of summed scores)
TIE_EPSILON = 1e-12

POLICIES = ("best_of_k", "critic", "majority", "critic_vote", "oracle")


@dataclass(frozen=True)
class Sample:
    """One candidate of one problem with its verdict and critic score: the one
    record every policy, pair builder and metric reads. Built by ``Sample.of``
    (the coordinator's phases and the store's readers both use it)."""

    candidate_id: str
    visible_pass: bool  # reproduced every visible example
    heldout_correct: bool  # the label policies are measured against
    heldout_outputs: tuple | None = None  # (n_heldout,) outputs; None if unknown
    score: float | None = None  # critic P(held-out correct); None if not scored
    text: str | None = None  # completion text, used to drop duplicate examples
    adapter_version: int = 0  # the adapter that sampled it (0 = base)

    @classmethod
    def of(cls, verdict: Verdict, candidate: Candidate | None = None, score: float | None = None) -> Sample:
        outputs = verdict.heldout_outputs
        return cls(
            candidate_id=verdict.candidate_id,
            visible_pass=verdict.status == "pass",
            heldout_correct=bool(verdict.heldout_correct),
            heldout_outputs=None if outputs is None else tuple(outputs),
            score=score,
            text=None if candidate is None else candidate.text,
            adapter_version=0 if candidate is None else candidate.adapter_version,
        )


# --------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------


def _passing(pool: Sequence[Sample]) -> list[Sample]:
    """Visible-pass candidates, sorted by candidate_id (the tie-break order)."""
    return sorted((s for s in pool if s.visible_pass), key=lambda s: s.candidate_id)


def _has_score(s: Sample) -> bool:
    return s.score is not None and not math.isnan(s.score)


def _mean_correct(candidates: Sequence[Sample]) -> float:
    return sum(s.heldout_correct for s in candidates) / len(candidates)


def _critic_winners(passing: list[Sample]) -> list[Sample]:
    """Passing candidates tied at the top critic score (all if none scored)."""
    scored = [s for s in passing if _has_score(s)]
    if not scored:
        return passing
    best = max(s.score for s in scored)
    return [s for s in scored if s.score == best]


def _vote_winners(passing: list[Sample], weighted: bool) -> list[list[Sample]]:
    """The output-vector classes tied at the top vote, each sorted by id.

    Returns [] when no passing candidate has an output vector. With
    ``weighted``, a vote weighs its critic score (missing = 0); if no voter is
    scored, every vote weighs 1, which is plain majority."""
    voters = [s for s in passing if s.heldout_outputs is not None]
    if not voters:
        return []
    use_scores = weighted and any(_has_score(s) for s in voters)
    classes: dict[tuple, list[Sample]] = {}
    weights: dict[tuple, float] = {}
    for s in voters:  # sorted by id, so every class list is sorted too
        key = s.heldout_outputs
        classes.setdefault(key, []).append(s)
        w = (s.score if _has_score(s) else 0.0) if use_scores else 1.0
        weights[key] = weights.get(key, 0.0) + w
    best = max(weights.values())
    winners = [classes[key] for key in classes if weights[key] >= best - TIE_EPSILON]
    return sorted(winners, key=lambda members: members[0].candidate_id)


# --------------------------------------------------------------------------
# Policies: the choice, and the exact expected held-out accuracy of the choice
# --------------------------------------------------------------------------


def select_best_of_k(pool: Sequence[Sample], rng: random.Random) -> Sample | None:
    """A uniformly random visible-pass candidate; None if none passes."""
    passing = _passing(pool)
    return rng.choice(passing) if passing else None


def expected_accuracy_best_of_k(pool: Sequence[Sample]) -> float:
    """Share of visible-pass candidates that are held-out correct (0 if none
    passes): the exact expectation of ``select_best_of_k`` over its rng."""
    passing = _passing(pool)
    return _mean_correct(passing) if passing else 0.0


def select_critic(pool: Sequence[Sample]) -> Sample | None:
    """The visible-pass candidate with the highest critic score."""
    winners = _critic_winners(_passing(pool))
    return winners[0] if winners else None


def expected_accuracy_critic(pool: Sequence[Sample]) -> float:
    winners = _critic_winners(_passing(pool))
    return _mean_correct(winners) if winners else 0.0


def select_majority(pool: Sequence[Sample]) -> Sample | None:
    """A member of the most common held-out output vector among visible-pass
    candidates: the first by id of the tied class holding the smallest id."""
    passing = _passing(pool)
    classes = _vote_winners(passing, weighted=False)
    if not classes:
        return passing[0] if passing else None
    return classes[0][0]


def _expected_accuracy_vote(pool: Sequence[Sample], weighted: bool) -> float:
    """Accuracy of a vote, averaged over a uniformly random pick among tied
    winning classes; best-of-k when nobody votes."""
    classes = _vote_winners(_passing(pool), weighted=weighted)
    if not classes:
        return expected_accuracy_best_of_k(pool)
    return sum(_mean_correct(members) for members in classes) / len(classes)


def expected_accuracy_majority(pool: Sequence[Sample]) -> float:
    return _expected_accuracy_vote(pool, weighted=False)


def select_critic_weighted_vote(pool: Sequence[Sample]) -> Sample | None:
    """Like ``select_majority``, each vote weighing its critic score; within
    the winning class the highest-scored member (then smallest id)."""
    passing = _passing(pool)
    classes = _vote_winners(passing, weighted=True)
    if not classes:
        return passing[0] if passing else None
    return _critic_winners(classes[0])[0]


def expected_accuracy_critic_vote(pool: Sequence[Sample]) -> float:
    return _expected_accuracy_vote(pool, weighted=True)


def oracle_accuracy(pool: Sequence[Sample]) -> float:
    """1.0 if any candidate (visible-pass or not) is held-out correct: the
    pass@k of this group, the bound no selector can beat."""
    return 1.0 if any(s.heldout_correct for s in pool) else 0.0


_EXPECTED_ACCURACY: dict[str, Callable[[Sequence[Sample]], float]] = {
    "best_of_k": expected_accuracy_best_of_k,
    "critic": expected_accuracy_critic,
    "majority": expected_accuracy_majority,
    "critic_vote": expected_accuracy_critic_vote,
    "oracle": oracle_accuracy,
}


def _check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"unknown selection policy {policy!r}; known: {', '.join(POLICIES)}")


def selection_accuracy(pools_per_problem: list[list[Sample]], k: int, policy: str) -> float:
    """Held-out accuracy of ``policy`` choosing from k samples per problem.

    Each problem's n >= k candidates are cut, in the given order, into
    floor(n / k) disjoint groups of k (a remainder is dropped); the policy's
    expected accuracy is averaged over a problem's groups, then over problems
    (every problem weighs the same). Raises ValueError for an unknown policy,
    k < 1, no problems, or a problem with fewer than k candidates."""
    _check_policy(policy)
    if k < 1:
        raise ValueError(f"selection_accuracy: need k >= 1, got k={k}")
    if not pools_per_problem:
        raise ValueError("selection_accuracy: no problems")
    accuracy_of = _EXPECTED_ACCURACY[policy]
    per_problem = []
    for index, pool in enumerate(pools_per_problem):
        n = len(pool)
        if n < k:
            raise ValueError(
                f"selection_accuracy: problem #{index} has n={n} candidates, fewer than k={k}")
        groups = [pool[g * k:(g + 1) * k] for g in range(n // k)]
        per_problem.append(math.fsum(accuracy_of(group) for group in groups) / len(groups))
    return math.fsum(per_problem) / len(per_problem)


# --------------------------------------------------------------------------
# Training-set selection (STaR): several distinct candidates per problem
# --------------------------------------------------------------------------


def select_training_examples(pool: Sequence[Sample], policy: str, per_problem: int,
                             rng: random.Random) -> list[Sample]:
    """Up to ``per_problem`` distinct candidates to fine-tune on.

    Candidates are ranked by the policy and taken in order, skipping
    duplicates (same ``text``, or same id when text is None):
      best_of_k    visible-pass candidates in random order (uses ``rng``)
      critic       visible-pass candidates by score, highest first
      majority     members of the winning output class only (a losing class
                   is a likely-wrong program), by id
      critic_vote  members of the weighted-vote winning class, by score
      oracle       visible-pass AND held-out correct candidates, by id; it
                   reads the held-out label, so it is an ablation only
    Returns [] if no candidate passes the visible examples."""
    _check_policy(policy)
    if per_problem < 0:
        raise ValueError(f"select_training_examples: need per_problem >= 0, got {per_problem}")
    passing = _passing(pool)
    if not passing:
        return []
    if policy == "best_of_k":
        ranked = list(passing)
        rng.shuffle(ranked)
    elif policy == "critic":
        ranked = _by_score(passing)
    elif policy in ("majority", "critic_vote"):
        classes = _vote_winners(passing, weighted=policy == "critic_vote")
        # the class the matching select_* function picks; no voters -> all pass
        members = classes[0] if classes else passing
        ranked = _by_score(members) if policy == "critic_vote" else members
    else:  # oracle
        ranked = [s for s in passing if s.heldout_correct]
    chosen: list[Sample] = []
    seen: set[Any] = set()
    for s in ranked:
        if len(chosen) >= per_problem:
            break
        key = ("text", s.text) if s.text is not None else ("id", s.candidate_id)
        if key not in seen:
            seen.add(key)
            chosen.append(s)
    return chosen


def _by_score(candidates: Sequence[Sample]) -> list[Sample]:
    """Highest critic score first, unscored last; stable, so ties keep id order."""
    return sorted(candidates, key=lambda s: -s.score if _has_score(s) else math.inf)


def agreement(pool: Sequence[Sample]) -> bool | None:
    """Whether all visible-pass candidates give the same held-out outputs.

    Only candidates with an output vector count; None if fewer than two do
    (nothing to agree or disagree on). Used to split accuracies into problems
    where the samples agree (selection is easy) and where they disagree."""
    vectors = [s.heldout_outputs for s in _passing(pool) if s.heldout_outputs is not None]
    if len(vectors) < 2:
        return None
    return all(v == vectors[0] for v in vectors)


# --------------------------------------------------------------------------
# One pool, every policy, several k: the selection table of an evaluation
# --------------------------------------------------------------------------

AGREE, DISAGREE = "agree", "disagree"


def disagreement_class(group: Sequence[Sample]) -> str:
    """"disagree" if the group's visible-pass candidates give at least two
    different held-out output vectors, else "agree" (this includes groups
    with fewer than two passing candidates). Identical vectors mean identical
    held-out correctness, so on "agree" groups every policy that picks a
    passing candidate scores the same: selection can only matter on
    "disagree" groups, which is what the study's localisation claim tests."""
    return DISAGREE if agreement(group) is False else AGREE


@dataclass(frozen=True)
class GroupResult:
    """The expected held-out accuracy of each policy on one group of k samples."""

    problem_id: str
    k: int
    group: int  # index of the group among the problem's floor(n / k) groups
    agreement: str  # AGREE or DISAGREE
    accuracy: dict[str, float]  # policy -> expected accuracy in [0, 1]


def group_results(pools: dict[str, Sequence[Sample]], ks: Sequence[int],
                  policies: Sequence[str] = POLICIES) -> list[GroupResult]:
    """Every policy scored on the same candidates: each problem's pool is cut,
    in order, into floor(n / k) disjoint groups of k for each k (a k above a
    problem's n gives it no group). Pure; the study and the coordinator's
    evaluation both aggregate these rows."""
    for policy in policies:
        _check_policy(policy)
    rows = []
    for pid, pool in pools.items():
        for k in ks:
            if k < 1:
                raise ValueError(f"group_results: need k >= 1, got k={k}")
            for g in range(len(pool) // k):
                group = pool[g * k:(g + 1) * k]
                rows.append(GroupResult(pid, k, g, disagreement_class(group),
                                        {p: _EXPECTED_ACCURACY[p](group) for p in policies}))
    return rows


def selection_table(rows: Sequence[GroupResult]) -> dict[str, dict[str, Any]]:
    """Rows -> {str(k): {"all" | "agree" | "disagree": {policy: mean accuracy,
    "n_groups": int}}}: means over groups. Every problem has the same number
    of groups at a given k, so "all" equals the per-problem average used by
    ``selection_accuracy``. A class without groups is left out."""
    buckets: dict[tuple[int, str], list[GroupResult]] = {}
    for r in rows:
        buckets.setdefault((r.k, "all"), []).append(r)
        buckets.setdefault((r.k, r.agreement), []).append(r)
    table: dict[str, dict[str, Any]] = {}
    for (k, cls), members in sorted(buckets.items()):
        policies = members[0].accuracy.keys()
        cell: dict[str, Any] = {p: math.fsum(r.accuracy[p] for r in members) / len(members) for p in policies}
        cell["n_groups"] = len(members)
        table.setdefault(str(k), {})[cls] = cell
    return table
