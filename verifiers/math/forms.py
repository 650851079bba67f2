"""Answer forms read before parsing (pure Python, no sympy): sets of answers, names, malformed text.

``answer_forms(text) -> list[str]`` turns one normalised answer into the texts
of its alternatives, each to be parsed on its own; more than one means a set
of answers (compared unordered, like a bare comma list):

- ``x = 1 or x = 2`` (also ``\\text{ or }``, normalised to `` or ``) -> [``x = 1``, ``x = 2``];
- ``1 \\pm \\sqrt{2}`` -> [``1 + \\sqrt{2}``, ``1 - \\sqrt{2}``] (``\\mp`` likewise; at most
  ``MAX_PM`` signs, more is left alone and fails to parse);
- a left side that only names the answer is dropped: ``f(x) = x^2`` -> ``x^2``,
  ``(a, b) = (3, 4)`` -> ``(3, 4)``;
- ``\\mathbb{R}`` is the whole line ``(-\\infty, \\infty)``; ``\\binom{n}{k}`` with
  integer n, k (n at most 10,000) is its value.

``unbalanced(text)`` names a bracket mismatch: an answer whose ( [ \\left( and
) ] \\right) do not pair up (in number and order, ignoring whether an interval
end is open or closed) or whose braces do not balance is malformed and is not
read for its leading number.

Guarantees: linear time in the text, never raises on any str.
"""

from __future__ import annotations

import math
import re

MAX_PM = 3  # 2**3 alternatives at most
_OR = re.compile(r"\s+or\s+|\s*\\(?:quad|qquad)\s*or\s*\\(?:quad|qquad)\s*", re.IGNORECASE)
_PM = re.compile(r"\\pm\b|\\mp\b|\u00b1|\u2213")
_NAME_LHS = re.compile(r"^\s*(?:[A-Za-z](?:_\{?\w+\}?)?\s*\(\s*[A-Za-z](?:\s*,\s*[A-Za-z])*\s*\)"  # f(x), g(a, b)
                       r"|\(\s*[A-Za-z](?:\s*,\s*[A-Za-z])+\s*\))\s*=(?!=)")  # (a, b)
_REALS = re.compile(r"\\mathbb\s*\{?\s*R\s*\}?|\\R\b|\u211d")
_BINOM = re.compile(r"\\[dt]?binom\s*\{\s*(\d{1,5})\s*\}\s*\{\s*(\d{1,5})\s*\}")
_OPEN = re.compile(r"\\left\s*(?:\(|\[|\\\{|\.)|\\right\s*(?:\)|\]|\\\}|\.)|[()\[\]]")


def unbalanced(text: str) -> str | None:
    """Why the brackets of ``text`` do not pair up, or None when they do."""
    depth = braces = 0
    for m in _OPEN.finditer(text):
        token = m.group(0)
        if token.startswith("\\left"):
            depth += 1
        elif token.startswith("\\right") or token in ")]":
            depth -= 1
        else:
            depth += 1
        if depth < 0:
            return f"a closing bracket without an opening one at {m.start()}"
    if depth:
        return f"{depth} bracket(s) never closed"
    for ch in re.sub(r"\\[{}]", "", text):
        braces += 1 if ch == "{" else -1 if ch == "}" else 0
        if braces < 0:
            return "a closing brace without an opening one"
    return "a brace never closed" if braces else None


def _rewrite(text: str) -> str:
    text = _REALS.sub(r"(-\\infty, \\infty)", text)
    text = _BINOM.sub(lambda m: str(math.comb(int(m.group(1)), int(m.group(2))))
                      if int(m.group(1)) <= 10_000 else m.group(0), text)
    m = _NAME_LHS.match(text)
    if m and "=" not in text[m.end():]:
        text = text[m.end():]
    return text.strip()


def _expand_pm(text: str) -> list[str]:
    signs = list(_PM.finditer(text))
    if not signs or len(signs) > MAX_PM:
        return [text]
    out = []
    for mask in range(1 << len(signs)):
        pieces, pos = [], 0
        for i, m in enumerate(signs):
            plus = not (mask >> i) & 1
            if m.group(0) in ("\\mp", "\u2213"):
                plus = not plus
            pieces += [text[pos:m.start()], " + " if plus else " - "]
            pos = m.end()
        out.append("".join(pieces) + text[pos:])
    return out


def answer_forms(text: str) -> list[str]:
    """The alternatives of one normalised answer (see the module docstring); [text] when it has none."""
    parts = [p for p in _OR.split(text) if p.strip()] or [text]
    forms: list[str] = []
    for part in parts:
        for alt in _expand_pm(_rewrite(part)):
            if alt not in forms:
                forms.append(alt)
    return forms
