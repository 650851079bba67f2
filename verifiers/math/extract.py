"""Take the final answer out of a model's solution text (pure Python, no sympy).

Order (the first rule that finds something wins):
  1. the last ``\\boxed{...}`` (or ``\\fbox{...}``) whose braces balance;
  2. the last "the answer is ..." / "final answer: ..." / "answer: ...",
     up to the end of its sentence or line;
  3. the last ``$...$`` (also ``\\(...\\)``, ``\\[...\\]``, ``$$...$$``);
  4. a text without prose (no two words in a row) on one line, or one holding a
     LaTeX environment or ``&``/``\\\\`` (a matrix over several lines), is the
     answer itself, however long: ``x = 3``, ``(1, 2]``, ``Monday``, a 1x100
     matrix (which the normaliser's length guard may then refuse; it is never
     cut to its last number);
  5. the last number (signed, with decimals, thousands commas or a ``a/b`` fraction),
     for a text of prose.

Only the last 100,000 characters of a longer text are searched.

Guarantees: linear time in the text length (no backtracking-heavy regexes on
the whole text; brace matching is a single scan), never raises on any str.
Not guaranteed: that the extracted text parses; that is the equivalence
module's job.
"""

from __future__ import annotations

import re

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE = re.compile(r"(?<!\\)[{}]")  # \{ and \} are set braces, not grouping
MAX_TEXT_CHARS = 100_000  # only the last 100,000 characters of a longer text are searched
# "the answer is", "final answer:", "answer:" (case-insensitive). The match is
# anchored on the keyword; the answer runs to the end of the sentence or line.
# "A: ..." at the start of a line is GSM8K's dressing of the final answer.
_ANSWER_IS = re.compile(r"(?:the\s+(?:final\s+)?answer\s+is|final\s+answer\s*(?:is)?\s*:?|(?:^|\n)[ \t]*(?:answer|A)[ \t]*:)\s*:?",
                        re.IGNORECASE)
# end of a sentence: a period not inside a number (so 3.5 survives), or a line break
_SENTENCE_END = re.compile(r"\.(?!\d)|\n")
# math delimiters; an escaped \$ is a currency sign, not a delimiter
_DELIM = re.compile(r"(?<!\\)\$\$|(?<!\\)\$|\\[()\[\]]")
_CLOSER = {"$$": "$$", "$": "$", "\\(": "\\)", "\\[": "\\]"}
# a $...$ "segment" made of prose (two words in a row, no LaTeX command) is two
# currency signs ("costs $5 and then $7"), not math. Starting only at a word's
# start, with a possessive run, keeps the search linear on a megabyte of letters.
_PROSE = re.compile(r"(?<![A-Za-z])[A-Za-z]{2,}+\s+[A-Za-z]{2}")
_NUMBER = re.compile(r"[-\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?|[-\u2212]?\.\d+")


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} with balanced braces, else None.

    Linear time: when a later \\boxed never closes, an earlier one can only
    close before the later one starts (past it, its depth never returns to
    zero), so each scan stops where the previously tried one began."""
    limit = len(text)
    for m in reversed(list(_BOX.finditer(text))):
        depth = 1
        for brace in _BRACE.finditer(text, m.end(), limit):
            depth += 1 if brace.group(0) == "{" else -1
            if depth == 0:
                return text[m.end():brace.start()]
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
    head = rest.lstrip()
    first = next(_math_segments(head), None)
    if first is not None and first[0] == 0:
        return first[1].strip()
    end = _SENTENCE_END.search(rest)
    answer = (rest[:end.start()] if end else rest).strip()
    return answer or None


def _math_segments(text: str):
    """(start, inner text) of each $...$, $$...$$, \\(...\\), \\[...\\] in order.

    One pass over the delimiters (a regex with lazy .+? would rescan the rest of
    the text from every unclosed opener: quadratic on "\\(" * 300000)."""
    opener, start = None, 0
    for m in _DELIM.finditer(text):
        token = m.group(0)
        if opener is None:
            if token in _CLOSER:
                opener, start = token, m.start()
        elif token == _CLOSER[opener]:
            yield start, text[start + len(opener):m.start()]
            opener = None


def _last_math(text: str) -> str | None:
    found = None
    for _, inner in _math_segments(text):
        inner = inner.strip()
        if inner and not ("\\" not in inner and _PROSE.search(inner)):
            found = inner
    return found


_STRUCTURE = re.compile(r"\\begin\s*\{|&|\\\\")


def _bare_answer(text: str) -> str | None:
    stripped = text.strip()
    if not stripped or _PROSE.search(stripped):
        return None
    return stripped if "\n" not in stripped or _STRUCTURE.search(stripped) else None


def _last_number(text: str) -> str | None:
    last = None
    for last in _NUMBER.finditer(text):
        pass
    return last.group(0) if last else None


def extract_answer(text: str) -> str | None:
    """The final answer in ``text`` by the rules above, or None."""
    if not isinstance(text, str):
        raise TypeError(f"extract_answer takes a str, got {type(text).__name__}")
    text = text[-MAX_TEXT_CHARS:]  # bounds the work on megabyte inputs; real solutions are far shorter
    for rule in (last_boxed, _answer_is, _last_math, _bare_answer, _last_number):
        found = rule(text)
        if found is not None and found.strip():
            return found.strip()
    return None
