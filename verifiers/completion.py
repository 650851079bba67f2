"""Completion-extraction rules: which part of a completion a verifier reads.

    check_rule(rule)           -> None, or ValueError naming the rule
    extract(rule, text)        -> the part, or None when the rule finds nothing

Rules (``task.extract``, carried to the verifier in ``Problem.data["extract"]``):
    full          the whole completion, stripped
    last_boxed    the content of the last \\boxed{...} (braces balanced)
    last_line     the last non-empty line
    last_number   the last number (thousands commas dropped: "1,234" -> "1234")
    after:MARKER  the text after the last MARKER, up to the end of its line
                  (GSM8K style: "after:####")

Guarantees: pure and linear in the text (the last MAX_TEXT_CHARS characters
are read); never raises for any text. Not guaranteed: that the part is a
well-formed answer -- the verifier judges that.
"""

from __future__ import annotations

import re

from verifiers.math.extract import last_boxed

RULES = ("full", "last_boxed", "last_line", "last_number", "after:MARKER")
MAX_TEXT_CHARS = 100_000
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def check_rule(rule: str) -> None:
    if rule in RULES[:-1] or (rule.startswith("after:") and len(rule) > len("after:")):
        return
    raise ValueError(f"task.extract = {rule!r}: expected one of {', '.join(RULES)}")


def extract(rule: str, text: str) -> str | None:
    text = text[-MAX_TEXT_CHARS:]
    if rule == "full":
        return text.strip() or None
    if rule == "last_boxed":
        return last_boxed(text)
    if rule == "last_line":
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return lines[-1] if lines else None
    if rule == "last_number":
        numbers = _NUMBER.findall(text)
        return numbers[-1].replace(",", "") if numbers else None
    if rule.startswith("after:"):
        marker = rule[len("after:"):]
        at = text.rfind(marker)
        if at < 0:
            return None
        return text[at + len(marker):].split("\n", 1)[0].strip() or None
    raise ValueError(f"task.extract = {rule!r}: expected one of {', '.join(RULES)}")
