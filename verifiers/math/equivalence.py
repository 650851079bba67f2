"""Decide whether a predicted answer equals the gold answer (in-process, no isolation).

``judge(gold, pred_text)`` is the pure decision that the isolated worker runs;
call it directly only on trusted input or inside a deadline (worker.py).

Equality conventions:
- Numbers are compared by exact value: decimals are exact rationals, so
  1/3 != 0.333 and pi != 3.14. Two constants that sympy cannot prove equal or
  different are compared at 60 significant digits (relative, so 1/2004! and
  1/2006! differ; math-verify's absolute tolerance accepts them).
- Expressions with variables are equal when they differ at no random probe
  point and ``sympy.simplify`` reduces their difference to 0; an unproven
  identity is "incorrect" (false rejects are possible, false accepts are not meant to be).
- ``x = 3`` equals ``3`` (a single-variable left side is dropped); two equations are
  equal when (lhs - rhs) of one is a nonzero constant multiple of the other's.
- Inequalities in one variable are intervals: ``x \\le 3`` is (-oo, 3];
  ``a < x \\le b`` is (a, b]. Interval ends must match exactly, open or closed
  (ends at infinity are open). ``(a, b)`` against an interval is the open interval.
- ``\\{...\\}`` is a set (unordered), ``(...)`` a tuple (ordered), a bare comma list
  is unordered against a set or another bare list and ordered against a tuple;
  sizes must be equal. A 1xn or nx1 matrix equals an n-tuple, but a row vector never
  equals a column vector (two matrices must have the same shape).
- Sets of answers (forms.py): ``x = 1 or x = 2`` and ``1 \\pm 2`` are the unordered
  lists of their alternatives; a naming left side (``f(x) =``, ``(a, b) =``) is dropped;
  ``\\mathbb{R}`` is (-oo, oo); ``\\binom{n}{k}`` of integers is its value.
- A predicted answer whose brackets do not pair up is a parse_error, never read for
  a leading number; one naming two or more multiple-choice letters is incorrect.
- Percent and decimal are different answers (50\\% is 50, not 0.5): which one a
  question means is not in the answer.
- Numbers too large to compute (TooLarge) are equal only if their normalised
  texts are identical: a conservative rule that may reject equal values.
- A gold answer that does not parse is compared as text (case and spaces ignored).
"""

from __future__ import annotations

import random
from typing import Any

import sympy as sp

from verifiers.math.extract import extract_answer, last_boxed
from verifiers.math.forms import answer_forms, unbalanced
from verifiers.math.normalize import (AnswerTooHostile, check_static, choice_letter, choices_named, gold_choice,
                                      normalize_text)
from verifiers.math.parse import Intervals, Matrix, ParseError, Relation, Seq, TooLarge, parse_answer

MAX_PRINT_CHARS = 300  # normalised forms longer than this are cut (never str() a huge object unguarded)
_DIGITS = 60


def bounded_str(value: Any) -> str:
    """A printable form of a parsed value with a size guard: a sympy object is
    printed only when it is small (str of a 10^5-digit integer is slow, and
    Python refuses ints over 4,300 digits)."""
    if isinstance(value, Relation):
        text = f"{bounded_str(value.lhs)} {value.op} {bounded_str(value.rhs)}"
    elif isinstance(value, Intervals):
        text = " U ".join(f"{'[' if lc else '('}{bounded_str(lo)}, {bounded_str(hi)}{']' if hc else ')'}"
                          for lo, hi, lc, hc in value.pieces)
    elif isinstance(value, Seq):
        inner = ", ".join(bounded_str(x) for x in value.items)
        text = {"set": "{%s}", "tuple": "(%s)", "list": "%s"}[value.kind] % inner
    elif isinstance(value, Matrix):
        text = "[" + "; ".join(", ".join(bounded_str(x) for x in row) for row in value.rows) + "]"
    elif isinstance(value, sp.Rational) and max(int(value.p).bit_length(), int(value.q).bit_length()) > 1000:
        text = f"<rational of ~{max(int(abs(value.p)).bit_length(), int(value.q).bit_length()) * 3 // 10} digits>"
    elif isinstance(value, sp.Basic) and sp.count_ops(value, visual=False) > 200:
        text = f"<{type(value).__name__} of {sp.count_ops(value)} operations>"
    else:
        text = str(value)
    return text if len(text) <= MAX_PRINT_CHARS else text[:MAX_PRINT_CHARS] + "..."


def _differs_at_probe(expr: sp.Expr, symbols: set, tol: float = 1e-20) -> bool:
    """True if expr is nonzero at one of three fixed pseudo-random rational points."""
    rng = random.Random(0)
    for _ in range(3):
        point = {s: sp.Rational(rng.randint(3, 97), rng.randint(2, 13)) for s in symbols}
        try:
            value = sp.N(expr.subs(point), 30)
        except (OverflowError, ValueError, ZeroDivisionError):  # x^{x^{x^x}} at 7/3: no verdict from this point
            continue
        if value.is_number and value.is_finite and abs(value) > tol:
            return True
    return False


def scalar_equal(a: sp.Expr, b: sp.Expr) -> bool:
    """Exact value equality of two scalar expressions (module conventions); False when unproven."""
    if a == b:
        return True
    if a.is_Rational and b.is_Rational:
        return False
    if a.has(sp.oo, -sp.oo, sp.zoo, sp.nan) or b.has(sp.oo, -sp.oo, sp.zoo, sp.nan):
        return False
    symbols = a.free_symbols | b.free_symbols
    diff = a - b
    if symbols:
        if _differs_at_probe(diff, symbols):  # cheap refutation before simplify
            return False
        return sp.expand(diff) == 0 or sp.simplify(diff) == 0
    if a.is_Rational or b.is_Rational:
        # a rational equals a constant expression only if the expression reduces to
        # that very rational: no digits of pi, however many, equal pi
        rational, other = (a, b) if a.is_Rational else (b, a)
        if _differs_numerically(rational, other):
            return False
        reduced = sp.simplify(other)
        return bool(reduced.is_Rational and reduced == rational)
    if _differs_numerically(a, b):
        return False
    reduced = sp.simplify(diff)
    if reduced.is_Number or reduced.is_zero is not None:
        return bool(reduced == 0 or reduced.is_zero)
    # unproven either way, and equal to 60 digits: 120 digits decide
    return not _differs_numerically(a, b, 2 * _DIGITS)


def _differs_numerically(a: sp.Expr, b: sp.Expr, digits: int = _DIGITS) -> bool:
    """True if a and b (constants) differ at ``digits`` significant digits, relative to their size."""
    va, vb = sp.N(a, digits), sp.N(b, digits)
    if not (va.is_number and vb.is_number):
        return True
    scale = max(abs(va), abs(vb))
    return bool(abs(va - vb) > scale * sp.Float(10, digits) ** (-(digits - 10)))


def _is_symbol(x: Any) -> bool:
    return isinstance(x, sp.Symbol)


def _as_interval(value: Any) -> Any:
    """Single-variable inequalities and x \\in S as Intervals; anything else unchanged."""
    if isinstance(value, Relation):
        if value.op == "in" and _is_symbol(value.lhs):
            return value.rhs
        if value.op in ("<", "<=", ">", ">="):
            var_left = _is_symbol(value.lhs) and isinstance(value.rhs, sp.Expr) and not value.rhs.free_symbols
            var_right = _is_symbol(value.rhs) and isinstance(value.lhs, sp.Expr) and not value.lhs.free_symbols
            if var_left or var_right:
                bound = value.rhs if var_left else value.lhs
                upper = (value.op in ("<", "<=")) == var_left  # x < b and b > x bound x from above
                closed = value.op in ("<=", ">=")
                return Intervals(((-sp.oo, bound, False, closed),) if upper else ((bound, sp.oo, closed, False),))
    return value


def _interval_key(piece: tuple) -> tuple:
    low, high, lc, hc = piece
    return low, high, lc and low.is_finite, hc and high.is_finite  # ends at infinity are open


def _pieces_equal(p: tuple, q: tuple) -> bool:
    (a0, a1, ac0, ac1), (b0, b1, bc0, bc1) = _interval_key(p), _interval_key(q)
    return ac0 == bc0 and ac1 == bc1 and _end_equal(a0, b0) and _end_equal(a1, b1)


def _end_equal(a: sp.Expr, b: sp.Expr) -> bool:
    if a.is_infinite or b.is_infinite:
        return a == b
    return scalar_equal(a, b)


def _unordered_equal(xs: tuple, ys: tuple) -> bool:
    if len(xs) != len(ys):
        return False
    remaining = list(ys)
    for x in xs:  # greedy matching: equality is transitive, so greedy is exact
        for j, y in enumerate(remaining):
            if values_equal(x, y):
                del remaining[j]
                break
        else:
            return False
    return True


def values_equal(gold: Any, pred: Any) -> bool:
    """Equality of two parsed values under the module's conventions."""
    gold, pred = _as_interval(gold), _as_interval(pred)
    # x = 3 against 3: drop a single-variable left side
    if isinstance(gold, Relation) != isinstance(pred, Relation):
        rel, other = (gold, pred) if isinstance(gold, Relation) else (pred, gold)
        if rel.op == "=" and _is_symbol(rel.lhs):
            return values_equal(rel.rhs, other) if rel is gold else values_equal(other, rel.rhs)
        return False
    if isinstance(gold, Relation):
        if gold.op != "=" or pred.op != "=":
            return gold.op == pred.op and values_equal(gold.lhs, pred.lhs) and values_equal(gold.rhs, pred.rhs)
        if _is_symbol(gold.lhs) and gold.lhs == pred.lhs:  # D = (0, 1) against D = (0, 1.0)
            return values_equal(gold.rhs, pred.rhs)
        if not all(isinstance(x, sp.Expr) for x in (gold.lhs, gold.rhs, pred.lhs, pred.rhs)):
            return False
        d_gold, d_pred = gold.lhs - gold.rhs, pred.lhs - pred.rhs
        if d_gold == 0 or d_pred == 0:
            return d_gold == d_pred
        # proportional: d_gold = c * d_pred with c the ratio at one probe point
        symbols = d_gold.free_symbols | d_pred.free_symbols
        if symbols != d_gold.free_symbols or symbols != d_pred.free_symbols:
            return False
        point = {s: sp.Rational(7 + 2 * k, 3 + k) for k, s in enumerate(sorted(symbols, key=str))}
        at_gold, at_pred = d_gold.subs(point), d_pred.subs(point)
        if at_pred == 0 or at_gold == 0:
            return bool(sp.simplify(d_gold / d_pred).is_number)
        residual = d_gold - (at_gold / at_pred) * d_pred
        return not _differs_at_probe(residual, symbols) and sp.simplify(residual) == 0
    if isinstance(gold, Intervals) or isinstance(pred, Intervals):
        gold, pred = (_tuple_as_interval(x) for x in (gold, pred))
        if not (isinstance(gold, Intervals) and isinstance(pred, Intervals)):
            return False
        return len(gold.pieces) == len(pred.pieces) and all(
            any(_pieces_equal(p, q) for q in pred.pieces) for p in gold.pieces)
    if isinstance(gold, Matrix) or isinstance(pred, Matrix):
        if not (isinstance(gold, Matrix) and isinstance(pred, Matrix)):  # both matrices: shapes must match
            gold, pred = (_vector_as_tuple(x) for x in (gold, pred))
        if isinstance(gold, Matrix) and isinstance(pred, Matrix):
            return (len(gold.rows) == len(pred.rows) and len(gold.rows[0]) == len(pred.rows[0])
                    and all(values_equal(x, y) for rg, rp in zip(gold.rows, pred.rows) for x, y in zip(rg, rp)))
        if isinstance(gold, Matrix) or isinstance(pred, Matrix):
            return False
    if isinstance(gold, Seq) or isinstance(pred, Seq):
        if not (isinstance(gold, Seq) and isinstance(pred, Seq)):
            return False
        kinds = {gold.kind, pred.kind}
        if kinds == {"set", "tuple"}:
            return False
        if "tuple" in kinds:
            return len(gold.items) == len(pred.items) and all(values_equal(x, y) for x, y in zip(gold.items, pred.items))
        return _unordered_equal(gold.items, pred.items)
    if isinstance(gold, sp.Expr) and isinstance(pred, sp.Expr):
        return scalar_equal(gold, pred)
    return False


def _tuple_as_interval(x: Any) -> Any:
    if isinstance(x, Seq) and x.kind == "tuple" and len(x.items) == 2 and all(isinstance(i, sp.Expr) for i in x.items):
        return Intervals(((x.items[0], x.items[1], False, False),))
    return x


def _vector_as_tuple(x: Any) -> Any:
    if isinstance(x, Matrix) and (len(x.rows) == 1 or len(x.rows[0]) == 1):
        return Seq("tuple", tuple(v for row in x.rows for v in row))
    return x


def parse_forms(text: str) -> Any:
    """A normalised answer's value; a set of answers (forms.py) is the bare list of its values."""
    values = [parse_answer(form) for form in answer_forms(text)]
    return values[0] if len(values) == 1 else Seq("list", tuple(values))


def _text_key(text: str) -> str:
    return "".join(text.split()).casefold().replace("{", "").replace("}", "")


def judge(gold: str, pred_text: str) -> dict[str, Any]:
    """The verdict fields (verdict, equal, extracted, gold_normalized, pred_normalized).

    Never raises for any pair of strings; may run long on adversarial sympy
    input, which is why callers run it under worker.py's deadline."""
    boxed = last_boxed(gold)
    extracted = extract_answer(pred_text)
    out: dict[str, Any] = {"extracted": extracted, "gold_normalized": None, "pred_normalized": None}
    try:
        check_static(boxed if boxed is not None else gold)
    except AnswerTooHostile as e:
        return {**out, "verdict": "parse_error", "equal": False, "error": f"gold answer: {e}"}
    gold_text = normalize_text(boxed if boxed is not None else gold)
    out["gold_normalized"] = gold_text[:MAX_PRINT_CHARS]
    if extracted is None:
        return {**out, "verdict": "no_answer", "equal": False}
    letter_of_gold = gold_choice(gold_text)
    if letter_of_gold is not None:
        letter = choice_letter(normalize_text(extracted)) if len(extracted) <= MAX_PRINT_CHARS else None
        if letter is not None and len(choices_named(extracted)) > 1:  # "B and D" answers two options
            letter = None
        out.update(gold_normalized=letter_of_gold, pred_normalized=letter)
        equal = letter == letter_of_gold
        return {**out, "verdict": "correct" if equal else "incorrect", "equal": equal}
    try:
        check_static(extracted)
        pred_norm = normalize_text(extracted)
    except AnswerTooHostile as e:
        return {**out, "verdict": "parse_error", "equal": False, "error": str(e)}
    out["pred_normalized"] = pred_norm[:MAX_PRINT_CHARS]
    if _text_key(gold_text) == _text_key(pred_norm):
        return {**out, "verdict": "correct", "equal": True}
    broken = unbalanced(pred_norm)
    if broken is not None:
        return {**out, "verdict": "parse_error", "equal": False, "error": f"unbalanced: {broken}"}
    try:
        gold_value = parse_forms(gold_text)
    except (ParseError, AnswerTooHostile):
        return {**out, "verdict": "incorrect", "equal": False}  # text gold: the texts differ
    except TooLarge:
        return {**out, "verdict": "incorrect", "equal": False, "error": "gold too large; texts differ"}
    try:
        pred_value = parse_forms(pred_norm)
    except ParseError as e:
        return {**out, "verdict": "parse_error", "equal": False, "error": str(e)}
    except TooLarge as e:
        return {**out, "verdict": "incorrect", "equal": False, "error": f"{e}; texts differ"}
    out.update(gold_normalized=bounded_str(gold_value), pred_normalized=bounded_str(pred_value))
    try:
        equal = bool(values_equal(gold_value, pred_value))
    except (TypeError, ValueError, AttributeError, ZeroDivisionError, RecursionError, OverflowError) as e:
        return {**out, "verdict": "parse_error", "equal": False, "error": f"cannot compare: {type(e).__name__}"}
    return {**out, "verdict": "correct" if equal else "incorrect", "equal": equal}
