"""STaR rationalization: retry a failed training problem once with its answer as a hint.

For tasks with a reference answer (arithmetic, math), a training problem on
which none of the round's k candidates passed gets one more candidate, sampled
from the task's ``hint_prompt(problem)`` (the question with the answer given).
If that candidate reaches the answer (``heldout_correct``), its text becomes a
training example for the ORIGINAL prompt, without the hint, as in STaR
(Zelikman et al. 2022, section 3.2): the model learns to produce the rationale
unaided. The coordinator records it as a selection of the original problem, so
it joins the accumulated STaR training set and a restarted coordinator rebuilds
the same set from the run store.

A task module opts in by providing ``hint_prompt(problem) -> str``; one that
lacks it (or raises ValueError for the run's problems, like code problems)
cannot rationalize, and ``hint_function`` says why.

Pure functions here; the coordinator wires them into ``_train_round``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Callable, Sequence

from constellation.protocol.messages import Problem
from constellation.algorithms.selection import Sample

HINT_SUFFIX = "#hint"  # hinted problem id = original id + suffix


def hint_function(task: ModuleType, problems: Sequence[Problem]) -> tuple[Callable[[Problem], str] | None, str]:
    """-> (the task's hint_prompt, "") when it works on these problems, else (None, reason)."""
    hint = getattr(task, "hint_prompt", None)
    if not callable(hint):
        return None, f"task module {task.__name__} has no hint_prompt(problem), so it cannot rationalize"
    if problems:
        try:
            hint(problems[0])
        except (ValueError, KeyError, TypeError) as e:
            return None, f"task module {task.__name__} cannot give a hint for problem {problems[0].id}: {e}"
    return hint, ""


def failed_problems(pools: dict[str, list[Sample]]) -> list[str]:
    """Problem ids none of whose candidates passed, in a stable order."""
    return sorted(pid for pid, pool in pools.items() if not any(s.visible_pass for s in pool))


def hinted_problem(problem: Problem, hint: Callable[[Problem], str]) -> Problem:
    """The same problem (same verification data) behind the hint prompt."""
    return Problem(id=problem.id + HINT_SUFFIX, task=problem.task, prompt=hint(problem), data=problem.data,
                   reference=problem.reference, difficulty=problem.difficulty)


def original_id(hinted_id: str) -> str:
    if not hinted_id.endswith(HINT_SUFFIX):
        raise ValueError(f"{hinted_id!r} is not a hinted problem id (no {HINT_SUFFIX!r} suffix)")
    return hinted_id[: -len(HINT_SUFFIX)]


def rationalized(hinted_pools: dict[str, list[Sample]]) -> list[tuple[str, str]]:
    """(original problem id, candidate id) for each hinted problem whose first
    correct candidate reached the answer; the rest are dropped."""
    out = []
    for hid in sorted(hinted_pools):
        good = [s for s in hinted_pools[hid] if s.visible_pass and s.heldout_correct]
        if good:
            out.append((original_id(hid), good[0].candidate_id))
    return out
