"""One phase of a round: sample k candidates for each of a set of problems,
verify them all, score them all.

A ``Phase`` holds everything that phase has received (candidates, verdicts,
scores, the critic text of each candidate) and nothing else; the coordinator
makes one per phase (the base's evaluation, a round's training sample, its
rationalization retries, the guard's validation sample) and drops it when the
phase's result is built, so no state is saved and restored around a nested
phase. Every record that leaves a phase is a ``Sample`` built by
``pools_of``, the one place candidates, verdicts and scores are joined
(the store's readers use it too).

Candidate ids are ``"<phase>/<round>/<problem_id>/<i>"``, so a phase owns the
ids that start with its ``prefix``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from constellation.algorithms.selection import Sample
from constellation.protocol import messages as m


def candidate_order(cid: str) -> tuple[str, int]:
    """Sort key of candidate ids "<phase>/<round>/<problem>/<i>": sampling order
    within a problem (i as a number, so 10 follows 9)."""
    head, _, idx = cid.rpartition("/")
    return head, int(idx) if idx.isdigit() else 0


def pools_of(candidates: Iterable[m.Candidate], verdicts: Mapping[str, m.Verdict],
             scores: Mapping[str, float]) -> dict[str, list[Sample]]:
    """problem id -> its verified candidates as Samples, in sampling order
    (an unverified candidate is left out; an unscored one has score None)."""
    pools: dict[str, list[Sample]] = defaultdict(list)
    for cand in sorted(candidates, key=lambda c: candidate_order(c.id)):
        verdict = verdicts.get(cand.id)
        if verdict is not None:
            pools[cand.problem_id].append(Sample.of(verdict, cand, scores.get(cand.id)))
    return dict(pools)


@dataclass
class Phase:
    name: str  # "eval" | "train" | "val" | "rationalize"
    round: int
    problems: dict[str, m.Problem]
    k: int  # candidates per problem
    adapter_version: int = 0  # the adapter the phase samples with (served when it began)
    candidates: dict[str, m.Candidate] = field(default_factory=dict)
    verdicts: dict[str, m.Verdict] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    critic_texts: dict[str, str] = field(default_factory=dict)  # candidate id -> the critic's input, made once
    to_score: list[m.ScoreItem] = field(default_factory=list)  # verified, not yet sent to the critic
    critic_version: int = 0  # the newest critic version whose scores the phase received

    @property
    def prefix(self) -> str:
        return f"{self.name}/{self.round}"

    @property
    def expected(self) -> int:
        return len(self.problems) * self.k

    def owns(self, candidate_id: str) -> bool:
        return candidate_id.startswith(self.prefix + "/")

    def complete(self, scored: bool) -> bool:
        """Every candidate verified (and scored, when there is a critic)."""
        return len(self.verdicts) >= self.expected and (not scored or len(self.scores) >= self.expected)

    def have_per_problem(self) -> dict[str, int]:
        have: dict[str, int] = defaultdict(int)
        for c in self.candidates.values():
            have[c.problem_id] += 1
        return have

    def unverified(self) -> dict[str, list[m.Candidate]]:
        """problem id -> its recorded candidates that have no verdict yet."""
        out: dict[str, list[m.Candidate]] = defaultdict(list)
        for cid, cand in self.candidates.items():
            if cid not in self.verdicts:
                out[cand.problem_id].append(cand)
        return dict(out)

    def unscored(self) -> list[m.Verdict]:
        return [v for cid, v in self.verdicts.items() if cid not in self.scores]

    def pools(self) -> dict[str, list[Sample]]:
        return pools_of(self.candidates.values(), self.verdicts, self.scores)
