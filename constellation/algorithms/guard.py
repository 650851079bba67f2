"""The collapse guard: stop self-training before it eats its own gains.

Self-training can collapse. Shafayat et al. (2025) found that models trained on
self-consistency rewards converge on one fixed answer while the reward keeps
rising; the feasibility runs of this project saw held-out pass@32 fall from
68% to 48% over rounds of unguarded continued training. The guard watches,
each round, three readings taken on a small validation split (problems drawn
from the training pool but never trained on):

  val_pass_at_1  share of validation samples that are held-out correct;
  diversity      mean number of distinct held-out output vectors per problem
                 among its samples (a parse failure has no vector and does not
                 count): how many different functions the model still writes;
  critic_mean    mean critic score of the samples (reported: a rising critic
                 mean while validation falls is the reward-hacking signature).

It decides to stop when either
  * validation pass@1 fell (by more than ``tolerance``) against the previous
    round for ``patience`` rounds in a row, or
  * diversity fell below ``diversity_floor`` times the base model's (round 0),
    the collapse to a fixed answer.

Pure logic: the coordinator feeds readings and writes the decisions as
``guard`` / ``early_stop`` metrics events; a restarted coordinator replays the
recorded readings to rebuild the same state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Reading:
    round: int
    val_pass_at_1: float
    diversity: float
    critic_mean: float | None = None


@dataclass(frozen=True)
class Decision:
    stop: bool
    reason: str  # one line a human reads in the monitor
    falls: int  # consecutive rounds with a validation fall, this one included
    diversity_ratio: float | None  # diversity / base diversity
    best_round: int  # the round with the highest validation pass@1 so far


@dataclass
class CollapseGuard:
    patience: int = 2
    tolerance: float = 0.0
    diversity_floor: float = 0.5
    history: list[Reading] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.patience < 1:
            raise ValueError(f"guard patience must be >= 1, got {self.patience}")
        if not 0.0 <= self.diversity_floor < 1.0:
            raise ValueError(f"guard diversity_floor must be in [0, 1), got {self.diversity_floor}")
        if self.tolerance < 0:
            raise ValueError(f"guard tolerance must be >= 0, got {self.tolerance}")

    def update(self, reading: Reading) -> Decision:
        """Record one round's reading (rounds in increasing order, round 0 =
        the base) and decide whether to stop after it."""
        for name in ("val_pass_at_1", "diversity"):
            value = getattr(reading, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"guard reading of round {reading.round}: {name} = {value!r}")
        if self.history and reading.round <= self.history[-1].round:
            raise ValueError(f"guard readings must come in round order: got round {reading.round} "
                             f"after round {self.history[-1].round}")
        self.history.append(reading)
        falls = 0
        for prev, cur in zip(reversed(self.history[:-1]), reversed(self.history)):
            if cur.val_pass_at_1 < prev.val_pass_at_1 - self.tolerance:
                falls += 1
            else:
                break
        base = self.history[0].diversity
        ratio = reading.diversity / base if base > 0 else None
        best = max(self.history, key=lambda r: (r.val_pass_at_1, -r.round)).round
        curve = " -> ".join(f"{r.val_pass_at_1:.1%}" for r in self.history[-(falls + 1):])
        if falls >= self.patience:
            reason = f"validation pass@1 fell {falls} rounds in a row ({curve}); best was round {best}"
            return Decision(True, reason, falls, ratio, best)
        if reading.round > 0 and ratio is not None and ratio < self.diversity_floor:
            reason = (f"output diversity collapsed: {reading.diversity:.2f} distinct held-out outputs per "
                      f"problem vs {base:.2f} for the base ({ratio:.0%} < floor {self.diversity_floor:.0%})")
            return Decision(True, reason, falls, ratio, best)
        if reading.round == 0:
            reason = f"base: validation pass@1 {reading.val_pass_at_1:.1%}, diversity {reading.diversity:.2f}"
        else:
            reason = (f"continue: validation pass@1 {reading.val_pass_at_1:.1%} "
                      f"({falls} fall{'s' if falls != 1 else ''} in a row, patience {self.patience}), "
                      f"diversity {ratio:.0%} of base" if ratio is not None else "continue")
        return Decision(False, reason, falls, ratio, best)


def diversity(output_vectors_per_problem: list[list[tuple | None]]) -> float:
    """Mean distinct held-out output vectors per problem (None = no vector,
    not counted). A problem whose samples all failed to parse counts 0."""
    if not output_vectors_per_problem:
        raise ValueError("diversity: no problems")
    return sum(len({v for v in vectors if v is not None})
               for vectors in output_vectors_per_problem) / len(output_vectors_per_problem)
