"""Take the final answer out of a model's solution text (pure Python, no sympy).

Order (the first rule that finds something wins):
  1. the last ``\\boxed{...}`` (or ``\\fbox{...}``) whose braces balance;
  2. the last "the answer is ..." / "final answer: ..." / "answer: ...",
     up to the end of its sentence or line;
  3. the last ``$...$`` (also ``\\(...\\)``, ``\\[...\\]``, ``$$...$$``);
  4. a short one-line text without prose (at most 200 characters, no two words
     in a row) is the answer itself: ``x = 3``, ``(1, 2]``, ``Monday``
     (an addition to the issue's order, so a bare answer is not cut to its last number);
  5. the last number (signed, with decimals, thousands commas or a ``a/b`` fraction).

Guarantees: linear time in the text length (no backtracking-heavy regexes on
the whole text; brace matching is a single scan), never raises on any str.
Not guaranteed: that the extracted text parses; that is the equivalence
module's job.
"""

from __future__ import annotations

import re

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
# "the answer is", "final answer:", "answer:" (case-insensitive). The match is
# anchored on the keyword; the answer runs to the end of the sentence or line.
# "A: ..." at the start of a line is GSM8K's dressing of the final answer.
_ANSWER_IS = re.compile(r"(?:the\s+(?:final\s+)?answer\s+is|final\s+answer\s*(?:is)?\s*:?|(?:^|\n)[ \t]*(?:answer|A)[ \t]*:)\s*:?",
                        re.IGNORECASE)
# end of a sentence: a period not inside a number (so 3.5 survives), or a line break
_SENTENCE_END = re.compile(r"\.(?!\d)|\n")
# an escaped \$ is a currency sign, not a math delimiter
_MATH = re.compile(r"(?<!\\)\$\$(.+?)(?<!\\)\$\$|(?<!\\)\$(.+?)(?<!\\)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
# a $...$ "segment" made of prose (two words in a row, no LaTeX command) is two
# currency signs ("costs $5 and then $7"), not math
_PROSE = re.compile(r"[A-Za-z]{2,}\s+[A-Za-z]{2,}")
_NUMBER = re.compile(r"[-\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?|[-\u2212]?\.\d+")


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} with balanced braces, else None.

    Linear time: when a later \\boxed never closes, an earlier one can only
    close before the later one starts (past it, its depth never returns to
    zero), so each scan stops where the previously tried one began."""
    limit = len(text)
    for m in reversed(list(_BOX.finditer(text))):
        depth, start = 1, m.end()
        for i in range(start, limit):
            ch = text[i]
            if ch == "{" and text[i - 1] != "\\":
                depth += 1
            elif ch == "}" and text[i - 1] != "\\":
                depth -= 1
                if depth == 0:
                    return text[start:i]
        limit = m.start()  # unbalanced: try the one before it, up to here
    return None


def _answer_is(text: str) -> str | None:
    last = None
    for last in _ANSWER_IS.finditer(text):
        pass
    if last is None:
        return None
    rest = text[last.end():]
    # a $...$ right after the keyword may hold periods (\ldots, 3.5): keep it whole
    m = _MATH.match(rest.lstrip())
    if m is not None:
        return next(g for g in m.groups() if g is not None).strip()
    end = _SENTENCE_END.search(rest)
    answer = (rest[:end.start()] if end else rest).strip()
    return answer or None


def _last_math(text: str) -> str | None:
    found = None
    for m in _MATH.finditer(text):
        inner = next(g for g in m.groups() if g is not None).strip()
        if inner and not ("\\" not in inner and _PROSE.search(inner)):
            found = inner
    return found


def _bare_answer(text: str) -> str | None:
    stripped = text.strip()
    if len(stripped) > 200 or "\n" in stripped or _PROSE.search(stripped):
        return None
    return stripped or None


def _last_number(text: str) -> str | None:
    last = None
    for last in _NUMBER.finditer(text):
        pass
    return last.group(0) if last else None


def extract_answer(text: str) -> str | None:
    """The final answer in ``text`` by the rules above, or None."""
    if not isinstance(text, str):
        raise TypeError(f"extract_answer takes a str, got {type(text).__name__}")
    for rule in (last_boxed, _answer_is, _last_math, _bare_answer, _last_number):
        found = rule(text)
        if found is not None and found.strip():
            return found.strip()
    return None
