"""Hugging Face math-verify as a judge for the isolated math workers.

    judge(gold, pred) -> {"verdict", "equal", "extracted", "gold_normalized", "pred_normalized", "error"}

Runs only inside a worker process (``python -m verifiers.math.worker
verifiers.math_verify:judge``, started by ``MathChecker(judge=JUDGE)``): the
parent owns the deadline and kills a worker that overruns it, so
math-verify's own signal-based timeouts are switched off here.

What it is: the answer parsing and equivalence that published GSM8K/MATH
numbers from open-r1, lighteval and TRL recipes use (``parse`` with LaTeX and
plain-expression extraction, then ``verify``), so a pass rate here is
comparable to theirs. math-verify is an extra: pip install -e ".[mathverify]".

Guarantees: every outcome is one of the math verdict kinds ("correct",
"incorrect", "no_answer" when nothing parses from the prediction,
"parse_error" when the gold answer itself does not parse); a math-verify
exception is a parse_error with its type. Not guaranteed: that
math-verify's conventions match the sympy checker of verifiers/math (they
differ on units, sets and intervals; that difference is why both exist).
"""

from __future__ import annotations

from typing import Any

JUDGE = "verifiers.math_verify:judge"
INSTALL_HINT = 'verifier.impl = "math_verify" needs math-verify: pip install -e ".[mathverify]"'


def _parse(text: str) -> list[Any]:
    from math_verify import parse

    return parse(text, parsing_timeout=None)


def judge(gold: str, pred: str) -> dict[str, Any]:
    from math_verify import verify

    gold_parsed = _parse(gold) or _parse(f"${gold}$")  # a bare "72" or "\\frac{1}{2}" as inline math
    if not gold_parsed:
        return {"verdict": "parse_error", "equal": False, "extracted": None, "gold_normalized": None,
                "pred_normalized": None, "error": f"gold answer {gold[:80]!r} does not parse"}
    pred_parsed = _parse(pred)
    if not pred_parsed:
        return {"verdict": "no_answer", "equal": False, "extracted": None, "gold_normalized": str(gold_parsed[0]),
                "pred_normalized": None, "error": ""}
    equal = bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))
    # parse -> [sympy value, the matched string]: the string is what a majority vote groups by
    extracted = str(pred_parsed[-1])
    return {"verdict": "correct" if equal else "incorrect", "equal": equal, "extracted": extracted,
            "gold_normalized": str(gold_parsed[0]), "pred_normalized": str(pred_parsed[0]), "error": ""}
