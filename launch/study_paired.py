"""A sweep's paired comparison: does changing KEY change pass@k?

Every value of a sweep (launch/study_sweep.py) runs the same seeds, and the
seed fixes the task split, so the values ("arms") evaluate the same problems.
For each value after the first, the section gives "value minus first value" of
the final round's held-out pass@k at each k of eval.ks, with a 95% interval
from ONE bootstrap plan applied to both arms: a resample draws seeds, then
problems within each drawn seed, and both arms are read on exactly those
(seed, problem) rows, so what a seed or a problem adds to both arms cancels in
the difference (a paired bootstrap: much narrower than two separate intervals).

The same difference of the base (round 0) is a sanity line: a key that does
not touch the base (coordinator.overlap, trainer.lr) must give 0 there, with a
zero-width interval when the runs are deterministic. Arms with different
seeds or evaluation problems cannot be paired: ``check_paired`` refuses them.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from constellation.algorithms.bootstrap import bootstrap
from launch.study_report import StudyError, Trajectory, pass_curve

# the question a section asks, for keys whose plain name says little
QUESTIONS = {"coordinator.overlap": "does one-step staleness change pass@k"}
CHANGES, NO_CHANGE = "changes pass@k", "no change detected at this size"


def check_paired(first_value: str, first: list[Trajectory], value: str, other: list[Trajectory]) -> None:
    """Refuse (StudyError) arms that do not share seeds and evaluation problems."""
    seeds_a, seeds_b = [t.seed for t in first], [t.seed for t in other]
    if seeds_a != seeds_b:
        raise StudyError(f"no paired comparison of {value!r} with {first_value!r}: their seeds differ "
                         f"({seeds_b} against {seeds_a})")
    for a, b in zip(first, other):
        if a.problems != b.problems:
            only_b, only_a = sorted(set(b.problems) - set(a.problems)), sorted(set(a.problems) - set(b.problems))
            raise StudyError(f"no paired comparison of {value!r} with {first_value!r}: seed {a.seed} evaluated "
                             f"different problems ({len(only_b)} only in {value!r}, e.g. {only_b[:1]}; "
                             f"{len(only_a)} only in {first_value!r}, e.g. {only_a[:1]})")


def paired_difference(first: list[Trajectory], other: list[Trajectory], ks: tuple[int, ...], n_boot: int,
                      round_of: Callable[[Trajectory], int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """other minus first of mean pass@k at round_of(t) -> (estimate, low, high), each (len(ks),).

    The statistic reads both arms on the same plan, so every resample is paired."""
    check_paired("first", first, "other", other)
    sizes = [len(t.problems) for t in first]
    return bootstrap(lambda plan: pass_curve(other, round_of, plan, ks) - pass_curve(first, round_of, plan, ks),
                     sizes, n_boot)


def verdict(low: np.ndarray, high: np.ndarray) -> str:
    """CHANGES when some k's interval excludes 0, else NO_CHANGE."""
    return CHANGES if bool(np.any((np.asarray(low) > 0) | (np.asarray(high) < 0))) else NO_CHANGE


def _triples(diff: tuple[np.ndarray, np.ndarray, np.ndarray], ks: tuple[int, ...]) -> dict[str, list[float]]:
    return {str(k): [float(diff[0][i]), float(diff[1][i]), float(diff[2][i])] for i, k in enumerate(ks)}


def _cell(triple: list[float]) -> str:
    est, lo, hi = (100 * x for x in triple)
    return "n/a" if not np.isfinite(est) else f"{est:+.1f} [{lo:+.1f}, {hi:+.1f}]"


def paired_section(key: str, arms: dict[str, list[Trajectory]], ks: list[int],
                   n_boot: int) -> tuple[list[str], dict[str, Any]]:
    """The markdown lines of the section and its numbers (report.json's "paired")."""
    values = list(arms)
    first_value, first = values[0], arms[values[0]]
    question = QUESTIONS.get(key, f"does {key} change pass@k")
    lines = [f"## {question[0].upper() + question[1:]}? ({key}: each value paired against {first_value})", ""]
    numbers: dict[str, Any] = {"key": key, "question": question, "against": first_value, "n_boot": n_boot}
    try:
        for value in values[1:]:
            check_paired(first_value, first, value, arms[value])
    except StudyError as e:
        return lines + [f"No paired comparison: {e}.", ""], {**numbers, "refused": str(e)}
    n_min = min(t.n_samples for arm in arms.values() for t in arm)
    shown = tuple(k for k in sorted(set(ks)) if k <= n_min)
    numbers["ks"] = list(shown)
    lines += [f"Value minus {key}={first_value}, in points, of the final round's held-out pass@k (each seed's "
              f"last evaluated round), on the same {len(first)} seeds and evaluation problems; 95% intervals "
              f"from {n_boot} resamples of one bootstrap plan shared by both arms (seeds, then problems within "
              f"seeds). Verdict: \"{CHANGES}\" when some k's interval excludes 0.", "",
              "| value | " + " | ".join(f"pass@{k}" for k in shown) + " | verdict |",
              "|---" * (len(shown) + 2) + "|"]
    numbers["values"], sanity = {}, []
    for value in values[1:]:
        final = paired_difference(first, arms[value], shown, n_boot, lambda t: t.final)
        base = paired_difference(first, arms[value], shown, n_boot, lambda t: 0)
        said = verdict(final[1], final[2])
        numbers["values"][value] = {"final_minus_first": _triples(final, shown),
                                    "base_minus_first": _triples(base, shown), "verdict": said,
                                    "base_differs": verdict(base[1], base[2]) == CHANGES,
                                    "final_rounds": [[a.final, b.final] for a, b in zip(first, arms[value])]}
        lines.append(f"| {value} | " + " | ".join(_cell(v) for v in _triples(final, shown).values()) +
                     f" | {said} |")
        sanity.append(_sanity_line(key, value, first_value, _triples(base, shown)))
        ends = [f"seed {a.seed}: round {b.final} against {a.final}"
                for a, b in zip(first, arms[value]) if a.final != b.final]
        if ends:  # a guard stop in one arm: its "final" is an earlier round
            sanity.append(f"- Final rounds differ between {value} and {first_value}: {'; '.join(ends)}.")
    return lines + ["", *sanity, ""], numbers


def _sanity_line(key: str, value: str, first_value: str, base: dict[str, list[float]]) -> str:
    """The base's paired difference: ~0 unless the key changes the base itself."""
    moved = any(lo > 0 or hi < 0 for _, lo, hi in base.values())
    return (f"- Sanity, the base (round 0), {value} minus {first_value}: "
            + ", ".join(f"k={k}: {_cell(v)}" for k, v in base.items())
            + (f". The base differs: {key} changes the base too, so the final difference includes it."
               if moved else f". The base is the same in both arms, as expected when {key} does not touch it."))
