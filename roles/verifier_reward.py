"""verifier.impl = "reward": a plain reward function, given by import path, as a verifier.

``verifier.reward_fn = "pkg.mod:func"`` names a function
``func(prompt, completion, answer) -> bool | float`` -- the shape of TRL's
``reward_funcs`` and verl's ``compute_score`` -- called with the problem's
prompt, the candidate's completion and the problem's reference answer. A
bool is the verdict; a float passes when it is >= ``verifier.reward_threshold``.

Verdict: status "pass" or "fail"; visible_passed/visible_total = 1/1 or
0/1; heldout_correct = passed; heldout_outputs = [the part of the
completion the task's extraction rule names] (majority vote groups by it);
detail = "reward <value>". A function that raises, or returns anything but
a bool or a finite number, gives that candidate a "runtime_error" verdict
naming the error; the role goes on.

Guarantees: the function is resolved at setup (a bad path fails READY with
the path). Not guaranteed: a deadline or isolation -- the function runs in
this process, as TRL and verl run theirs; a function that can hang or crash
belongs in a sandbox of its own (see the "code" and "math" verifiers).
"""

from __future__ import annotations

import importlib
import math
from typing import Any, Callable

from constellation.protocol.messages import Candidate, Problem, Verdict
from roles.verifier import CandidateVerifier


def load_reward_fn(path: str) -> Callable[[str, str, Any], Any]:
    module, _, name = path.partition(":")
    if not module or not name:
        raise ValueError(f'verifier.reward_fn = {path!r}: expected "package.module:function"')
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"verifier.reward_fn = {path!r}: {type(e).__name__}: {e}") from e
    if not callable(fn):
        raise ValueError(f"verifier.reward_fn = {path!r} is not callable")
    return fn


def reward_verdict(problem: Problem, candidate: Candidate, value: Any, threshold: float) -> Verdict:
    """A reward value -> the candidate's Verdict (pure; see the module docstring)."""
    from verifiers.completion import extract

    base = {"candidate_id": candidate.id, "problem_id": problem.id, "visible_total": 1}
    if isinstance(value, bool):
        passed = value
    elif isinstance(value, (int, float)) and math.isfinite(value):
        passed = value >= threshold
    else:
        return Verdict(**base, status="runtime_error", visible_passed=0, heldout_correct=None,
                       detail=f"reward function returned {type(value).__name__} {str(value)[:40]!r}, "
                              f"not a bool or a finite number")
    answer = extract(problem.data.get("extract", "full"), candidate.text)
    return Verdict(**base, status="pass" if passed else "fail", visible_passed=int(passed), heldout_correct=passed,
                   heldout_outputs=[answer], detail=f"reward {value}")


class RewardVerifier(CandidateVerifier):
    """Any task whose problems carry a reference answer, judged by a user's reward function."""

    task = None  # any task

    def setup(self) -> dict[str, Any]:
        self.fn = load_reward_fn(self.cfg.verifier.reward_fn)
        return {"reward_fn": self.cfg.verifier.reward_fn, "threshold": self.cfg.verifier.reward_threshold}

    def verify_one(self, problem: Problem, candidate: Candidate) -> Verdict:
        try:
            value = self.fn(problem.prompt, candidate.text, problem.reference)
        except Exception as e:  # the user's code failing on one candidate is that candidate's verdict
            return Verdict(candidate_id=candidate.id, problem_id=problem.id, status="runtime_error",
                           visible_passed=0, visible_total=1, heldout_correct=None,
                           detail=f"reward function raised {type(e).__name__}: {str(e)[:200]}")
        return reward_verdict(problem, candidate, value, self.cfg.verifier.reward_threshold)
