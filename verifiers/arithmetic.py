"""Grading for the "arithmetic" task (constellation/tasks/arithmetic.py): the final answer line.

A completion is a scratchpad that ends in a line ``A: <integer>``; ``grade``
reads the last such line of the first MAX_TEXT characters and compares its
number with ``problem.data["answer"]``.

What the grader guarantees:
  * Every candidate text gets a Verdict in microseconds: the text is only
    matched by one anchored regular expression (no eval), answers longer than
    MAX_ANSWER_DIGITS digits do not match, and text past MAX_TEXT is ignored.
  * ``pass``: the last answer line's number equals the true result;
    ``fail``: it is another number; ``parse_error``: there is no answer line.
    ``heldout_outputs`` is [the answer as a canonical integer], so a majority
    vote over candidates is a vote on final answers.
What it does not guarantee:
  * That the scratchpad is right: a right answer after a wrong scratchpad
    passes (as in STaR), and the digit lines are never checked.
"""

from __future__ import annotations

import re

from constellation.protocol.messages import Candidate, Problem, Verdict

MAX_TEXT = 4000  # longer completions are graded on their first MAX_TEXT chars
MAX_ANSWER_DIGITS = 40  # int() of a longer digit string would cost time for nothing
ANSWER_RE = re.compile(rf"^A: ?(-?\d{{1,{MAX_ANSWER_DIGITS}}})\s*$", re.MULTILINE)


def extract_answer(text: str) -> str | None:
    """The number of the last ``A: <digits>`` line, or None."""
    found = ANSWER_RE.findall(text[:MAX_TEXT])
    return found[-1] if found else None


def grade(problem: Problem, candidate: Candidate) -> Verdict:
    """One candidate's verdict (see the module docstring for what each status means)."""
    got = extract_answer(candidate.text)
    if got is None:
        return Verdict(candidate_id=candidate.id, problem_id=problem.id, status="parse_error", visible_passed=0,
                       visible_total=1, heldout_correct=False, heldout_outputs=None, detail="no 'A: <number>' line")
    ok = int(got) == int(problem.data["answer"])
    return Verdict(candidate_id=candidate.id, problem_id=problem.id, status="pass" if ok else "fail",
                   visible_passed=int(ok), visible_total=1, heldout_correct=ok, heldout_outputs=[str(int(got))],
                   detail="" if ok else f"answer {got}")
