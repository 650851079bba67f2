"""Text-level normalisation of an answer string, before any parsing (no sympy).

Conventions (each one is a choice; the README's "Math verifier" section lists them):
- Unicode minus signs and dashes (U+2212, U+2013, U+2014, U+FE63, U+FF0D) are "-";
  ×, ÷, ·, π, √, ∞, ≤, ≥, ≠, ∪ become their LaTeX commands.
- LaTeX spacing and sizing (``\\left``, ``\\right``, ``\\!``, ``\\,``, ``\\;``,
  ``\\quad``, ``\\big``, ``\\displaystyle``) is dropped; ``\\dfrac``/``\\tfrac`` are ``\\frac``.
- Thousands separators ``1,000``, ``1{,}000``, ``10,\\!000``, ``1\\,000`` are removed
  only in a digit group of the exact shape d{1,3}(,ddd)+, so ``1,2`` stays a pair.
- ``%``, ``\\%``, degrees (``^\\circ``, ``°``, ``\\degree``) and currency signs are
  stripped: ``50\\%`` equals ``50`` (not ``0.5``) and ``30^\\circ`` equals ``30`` (not ``\\pi/6``).
- Units: ``\\text{...}``/``\\mbox{...}`` are unwrapped, then trailing words of two or
  more letters after a number (``cm``, ``dollars``, ``m^2``) are dropped.
- Mixed numbers ``3\\frac{1}{2}`` and ``3 1/2`` mean 3 + 1/2.
- Number words zero to twenty (and the tens up to ninety) are their integers,
  when the whole answer is such a word, possibly followed by a unit.
- Multiple choice: a letter A-E in its usual dressings (``(B)``, ``B)``, ``\\textbf{(B)}``,
  ``option B``, ``B. 12``) is a choice; see ``choice_letter``.
"""

from __future__ import annotations

import re

MAX_ANSWER_CHARS = 2000  # static guard: longer extracted answers are a parse_error
MAX_NESTING = 60  # static guard: deeper brace/paren nesting is a parse_error


class AnswerTooHostile(ValueError):
    """The answer fails a cheap static guard (length, nesting)."""


_UNICODE = {
    "\u2212": "-", "\u2013": "-", "\u2014": "-", "\ufe63": "-", "\uff0d": "-",
    "\u00d7": r"\times ", "\u00f7": r"\div ", "\u00b7": r"\cdot ", "\u22c5": r"\cdot ",
    "\u03c0": r"\pi ", "\u221a": r"\sqrt ", "\u221e": r"\infty ", "\u2264": r"\le ",
    "\u2265": r"\ge ", "\u2260": r"\ne ", "\u222a": r"\cup ", "\u00a0": " ", "\u2009": " ",
    "\u202f": " ", "\u00b0": "", "\u2032": "'",
}
_DROP = re.compile(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|biggl|biggr|big|Big|bigg|Bigg|displaystyle|textstyle"
                   r"|quad|qquad|limits|nolimits)(?![a-zA-Z])|(?<!\\)\\[!,;:> ]|~")
_STYLE = re.compile(r"\\(?:mathrm|mathbf|mathit|textbf|textit|textrm|boldsymbol|bm|operatorname|text|mbox|textnormal)\s*\{([^{}]*)\}")
_THOUSANDS = re.compile(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?![\d,]|\.\d)|(?<![\d.,])\d{1,3}(?:,\d{3})+\.\d+")
_MIXED_LATEX = re.compile(r"(?<![\d.^_}a-zA-Z\\])(\d+)\s*\\frac\{(\d+)\}\{(\d+)\}")
_MIXED_PLAIN = re.compile(r"(?<![\d./^])(\d+) (\d+)/(\d+)(?![\d/.])")
# possessive letter runs: without them "1 aaaa...a!" backtracks exponentially
_UNIT = re.compile(r"(?<=[\d}).])\s*((?:[a-zA-Z]{2,}+\.?\s*)+(?:\^\s*\{?[23]\}?)?|[a-zA-Z]\s*\^\s*\{?[23]\}?|[mgsl])\s*$")
# words that must never be taken for a unit
_MATH_WORDS = {"pi", "sin", "cos", "tan", "sec", "csc", "cot", "log", "ln", "exp", "sqrt", "infty", "inf",
               "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "or", "and"}
_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}
_NUMBER_WORDS.update({"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90})
_CHOICE = re.compile(r"^\s*(?:\\textbf\{|\\text\{|\\mathrm\{)?\s*(?:option|choice|answer)?\s*[:]?\s*"
                     r"(?:\(([A-Ea-e])\)|([A-E])(?:[).:]|\s|$))")


def check_static(text: str) -> None:
    """Raise AnswerTooHostile for an answer too long or too deeply nested to parse."""
    if len(text) > MAX_ANSWER_CHARS:
        raise AnswerTooHostile(f"answer of {len(text)} characters (limit {MAX_ANSWER_CHARS})")
    depth = 0
    for ch in text:
        if ch in "{([":
            depth += 1
            if depth > MAX_NESTING:
                raise AnswerTooHostile(f"nesting deeper than {MAX_NESTING}")
        elif ch in "})]":
            depth = max(0, depth - 1)


_GOLD_CHOICE = re.compile(r"^\s*(?:\(([A-Ea-e])\)|([A-E]))\s*$")


def gold_choice(text: str) -> str | None:
    """The letter if a (normalised) gold answer is a bare choice: ``B``, ``(B)``, ``(b)``."""
    m = _GOLD_CHOICE.match(text)
    return (m.group(1) or m.group(2)).upper() if m else None


def choice_letter(text: str) -> str | None:
    """The multiple-choice letter A-E of a dressed answer, or None.

    A bare lowercase letter is a variable, not a choice; ``(a)`` is a choice."""
    m = _CHOICE.match(text.replace("$", ""))
    if m is None:
        return None
    return (m.group(1) or m.group(2)).upper()


_CHOICE_NAMED = re.compile(r"\(([A-Ea-e])\)|(?<![A-Za-z\\])([A-E])(?![A-Za-z])")


def choices_named(text: str) -> set[str]:
    """Every multiple-choice letter a text names: ``(A)``/``(a)``, or a capital A-E standing alone."""
    return {(m.group(1) or m.group(2)).upper() for m in _CHOICE_NAMED.finditer(text)}


def _strip_units(s: str) -> str:
    m = _UNIT.search(s)
    if m is None or any(w.rstrip(".").lower() in _MATH_WORDS for w in re.findall(r"[a-zA-Z.]+", m.group(1))):
        return s
    return s[:m.start()].rstrip()


def normalize_text(answer: str) -> str:
    """The cleaned LaTeX/plain text of one answer (see the module conventions)."""
    s = answer.strip()
    for k, v in _UNICODE.items():
        s = s.replace(k, v)
    s = s.replace("\\$", " ").replace("$", " ")
    s = re.sub(r"^\\\(|\\\)$|^\\\[|\\\]$", "", s.strip())
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = s.replace("{,}", ",").replace(",\\!", ",")
    s = re.sub(r"(\d)\\,(?=\d{3})", r"\1", s)  # 1\,000 (thin-space separator)
    s = _DROP.sub(" ", s)
    s = re.sub(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree|\\%|%|€|£|¥|\bUSD\b|\bRs\.?", " ", s)
    for _ in range(3):  # nested \text{\textbf{..}}
        s = _STYLE.sub(lambda m: " " + m.group(1) + " ", s)
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\sqrt(\d+)", r"\\sqrt{\1}", s)
    s = re.sub(r"\{(?:v|V|p|b|B|small)?matrix\}", "{matrix}", s)
    s = re.sub(r"\\begin\{array\}\{[^{}]*\}", r"\\begin{array}", s)  # drop the column spec
    s = _THOUSANDS.sub(lambda m: m.group(0).replace(",", ""), s)
    s = _MIXED_LATEX.sub(r"(\1+\\frac{\2}{\3})", s)
    s = _MIXED_PLAIN.sub(r"(\1+\2/\3)", s)
    s = re.sub(r"\s+", " ", s).strip().rstrip(".").strip()
    words = s.lower().split()
    if words and words[0] in _NUMBER_WORDS and all(w.isalpha() for w in words):
        s = str(_NUMBER_WORDS[words[0]])
    return _strip_units(s)
