"""A small recursive-descent parser from normalised answer text to sympy values.

Why our own parser and not ``sympy.parse_expr`` or latex2sympy: ``parse_expr``
calls ``eval``; and both build ``10^{10^{10}}`` or ``100000!`` eagerly, which hangs.
Here every number node passes a size guard *before* sympy computes it
(``TooLarge``), decimals are exact rationals (0.333 is 333/1000, never a float),
and the recursion depth is bounded by the static nesting guard.

Grammar (loosest first)::

    answer   := item (',' item)*                      several items: a bare list
    item     := sum (relop sum)*                      = < > \\le \\ge \\ne \\in
    sum      := product (('+'|'-') product)*
    product  := unary (('*'|\\cdot|\\times|'/'|\\div) unary | implicit-juxtaposition)*
    unary    := ('-'|'+') unary | power
    power    := postfix ('^' unary)?                  right-associative
    postfix  := atom '!'*
    atom     := number | letter[_sub] | '(' ... ')' | '[' ... ']' | '{' ... '}' | '|' sum '|'
              | \\frac | \\sqrt | \\pi | \\infty | \\sin... | \\{ ... \\} | \\begin{matrix} ...

Conventions: ``e`` is Euler's number and ``i`` the imaginary unit; ``\\log x`` is
the natural logarithm (``\\log_b x`` has base b); a run of three or more letters
that is not a known name (``apples``) is not math: ParseError, so the answer is
compared as text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import sympy as sp

MAX_BITS = 350_000  # ~10^5 decimal digits: larger exact numbers are TooLarge
MAX_FACTORIAL = 5000  # 5000! has 16,326 digits and takes < 1 ms


class ParseError(ValueError):
    pass


class TooLarge(ValueError):
    """A number too large to compute exactly (huge power, factorial or tower)."""


@dataclass(frozen=True)
class Relation:
    op: str  # "=" "<" ">" "<=" ">=" "!="
    lhs: Any
    rhs: Any


@dataclass(frozen=True)
class Intervals:
    pieces: tuple[tuple[Any, Any, bool, bool], ...]  # (low, high, low_closed, high_closed), in input order


@dataclass(frozen=True)
class Seq:
    kind: str  # "tuple" (ordered, parentheses), "set" (\{...\}) or "list" (bare commas)
    items: tuple[Any, ...]


@dataclass(frozen=True)
class Matrix:
    rows: tuple[tuple[Any, ...], ...]


_TOKEN = re.compile(r"""
 (?P<num>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+(?![\d.]))?)
|(?P<cmd>\\[a-zA-Z]+|\\[{}|])
|(?P<word>[a-zA-Z]+)
|(?P<row>\\\\)
|(?P<op><=|>=|!=|\*\*|[-+*/^_=<>!(),\[\]{}&|:'])
|(?P<ws>\s+)
""", re.VERBOSE)
_FUNCS = {"sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "sec": sp.sec, "csc": sp.csc, "cot": sp.cot,
          "arcsin": sp.asin, "arccos": sp.acos, "arctan": sp.atan, "sinh": sp.sinh, "cosh": sp.cosh,
          "tanh": sp.tanh, "exp": sp.exp, "ln": sp.log, "log": sp.log}
_RELOPS = {"=": "=", "<": "<", ">": ">", "<=": "<=", ">=": ">=", "!=": "!=", r"\le": "<=", r"\leq": "<=",
           r"\ge": ">=", r"\geq": ">=", r"\lt": "<", r"\gt": ">", r"\ne": "!=", r"\neq": "!=",
           r"\leqslant": "<=", r"\geqslant": ">=", r"\in": "in"}
_PRODUCT_OPS = {"*", "**", r"\cdot", r"\times", "/", r"\div"}


def tokenize(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ParseError(f"unexpected character {text[pos]!r} at {pos}")
        pos = m.end()
        kind = m.lastgroup
        if kind == "ws":
            continue
        val = m.group(0)
        if kind == "word":
            if val in _FUNCS or val in ("pi", "sqrt", "frac", "infty", "matrix", "array", "begin", "end", "or", "and"):
                out.append(("cmd", "\\" + val))
            elif len(val) >= 3:
                raise ParseError(f"word {val!r} is not math")
            else:
                out.extend(("word", ch) for ch in val)  # "xy" is x*y
            continue
        out.append((kind, val))
    return out


def guard(x: Any) -> Any:
    """Raise TooLarge for an exact number beyond MAX_BITS (numerator or denominator)."""
    if isinstance(x, sp.Rational) and (int(x.p).bit_length() > MAX_BITS or int(x.q).bit_length() > MAX_BITS):
        raise TooLarge("number beyond 10^100000")
    return x


def safe_pow(base: Any, exp: Any) -> Any:
    """base**exp, refusing powers whose exact value would be huge (10^{10^{10}})."""
    if not isinstance(base, sp.Expr) or not isinstance(exp, sp.Expr):
        raise ParseError("power of a non-number")
    if (base.free_symbols or exp.free_symbols) and _tower_height(exp) >= 2:
        raise TooLarge("symbolic power tower of height 4 or more")  # x^{x^{x^x}}: evaluating it overflows
    if exp.is_Number and abs(exp) > 1 and base.is_number:
        mag = abs(sp.N(base, 15)) if not base.is_Rational else None
        if base.is_Rational:
            size = max(int(base.p).bit_length(), int(base.q).bit_length())
            if size > 1 and float(abs(exp)) * size > MAX_BITS:
                raise TooLarge("power beyond 10^100000")
        elif mag is not None and mag.is_finite and mag != 0 and float(abs(exp)) * abs(float(sp.log(mag, 2))) > MAX_BITS:
            raise TooLarge("power beyond 10^100000")
    return guard(sp.Pow(base, exp))


def _tower_height(e: Any) -> int:
    """How many powers are stacked in e's exponents (x: 0, x^y: 1, x^{y^z}: 2)."""
    if isinstance(e, sp.Pow):
        return 1 + _tower_height(e.exp)
    return max((_tower_height(a) for a in getattr(e, "args", ())), default=0)


def rational_of(num: str) -> sp.Rational:
    mantissa, _, exponent = num.lower().partition("e")
    value = sp.Rational(mantissa if not mantissa.endswith(".") else mantissa[:-1])
    if exponent:
        if abs(int(exponent)) > 100_000:
            raise TooLarge(f"exponent {exponent}")
        value = value * sp.Integer(10) ** int(exponent)
    return guard(value)


class Parser:
    def __init__(self, text: str) -> None:
        self.toks = tokenize(text)
        self.pos = 0

    # -- token helpers
    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        i = self.pos + offset
        return self.toks[i] if i < len(self.toks) else None

    def at(self, *vals: str) -> bool:
        t = self.peek()
        return t is not None and t[1] in vals

    def take(self, *vals: str) -> str:
        t = self.peek()
        if t is None or (vals and t[1] not in vals):
            raise ParseError(f"expected {' or '.join(vals) or 'a token'}, got {t[1] if t else 'end'!r}")
        self.pos += 1
        return t[1]

    # -- grammar
    def parse(self) -> Any:
        items = [self.item()]
        while self.at(","):
            self.take(",")
            items.append(self.item())
        if self.peek() is not None:
            raise ParseError(f"unexpected {self.peek()[1]!r}")
        return items[0] if len(items) == 1 else Seq("list", tuple(items))

    def item(self) -> Any:
        first = self.union()
        chain: list[Any] = [first]
        while self.peek() is not None and self.peek()[1] in _RELOPS:
            chain.append(_RELOPS[self.take()])
            chain.append(self.union())
        if len(chain) == 1:
            return first
        if len(chain) == 3:
            return Relation(chain[1], chain[0], chain[2])
        if len(chain) == 5 and all(op in ("<", "<=", ">", ">=") for op in chain[1::2]):
            return _chain_interval(chain)
        raise ParseError("relation chain not understood")

    def union(self) -> Any:
        left = self.sum()
        while self.at(r"\cup"):
            self.take()
            right = self.sum()
            left, right = _open_interval(left), _open_interval(right)
            if not isinstance(left, Intervals) or not isinstance(right, Intervals):
                raise ParseError("\\cup of non-intervals")
            left = Intervals(left.pieces + right.pieces)
        return left

    def sum(self) -> Any:
        first = self.product()
        if not self.at("+", "-"):
            return first
        terms = [first]
        while self.at("+", "-"):
            op = self.take()
            term = self.product()
            terms.append(_arith(sp.Integer(0), term, "-") if op == "-" else term)
        return _combine(terms, sp.Add)

    def product(self) -> Any:
        first = self.unary()
        factors = [first]
        while True:
            t = self.peek()
            if t is None:
                break
            if t[1] in _PRODUCT_OPS:
                op = self.take()
                factor = self.unary()
                factors.append(_arith(sp.Integer(1), factor, "/") if op in ("/", r"\div") else factor)
            elif self._starts_atom(t):
                factors.append(self.power())
            else:
                break
        return first if len(factors) == 1 else _combine(factors, sp.Mul)

    def _starts_atom(self, t: tuple[str, str]) -> bool:
        kind, val = t
        if kind in ("num", "word"):
            return True
        if kind == "cmd":
            return val not in _RELOPS and val not in _PRODUCT_OPS and val not in (r"\cup", r"\end", r"\}", r"\or", r"\and")
        return val in ("(", "{")

    def unary(self) -> Any:
        if self.at("-", "+"):
            op = self.take()
            value = self.unary()
            return _arith(sp.Integer(0), value, "-") if op == "-" else value
        return self.power()

    def power(self) -> Any:
        base = self.postfix()
        if self.at("^", "**"):
            self.take()
            exp = self.unary()
            return safe_pow(base, exp)
        return base

    def postfix(self) -> Any:
        value = self.atom()
        while self.at("!"):
            self.take()
            if not (isinstance(value, sp.Integer) and 0 <= value <= MAX_FACTORIAL):
                if isinstance(value, sp.Integer) and value > MAX_FACTORIAL:
                    raise TooLarge(f"factorial of a number above {MAX_FACTORIAL}")
                raise ParseError("factorial of a non-integer")
            value = sp.factorial(value)
        return value

    def group(self, close: str) -> Any:
        value = self.parse_until(close)
        self.take(close)
        return value

    def parse_until(self, *closers: str) -> Any:
        items = [self.item()]
        while self.at(","):
            self.take(",")
            items.append(self.item())
        if not self.at(*closers):
            raise ParseError(f"expected {' or '.join(closers)}")
        return items[0] if len(items) == 1 else Seq("tuple", tuple(items))

    def atom(self) -> Any:
        t = self.peek()
        if t is None:
            raise ParseError("unexpected end")
        kind, val = t
        self.pos += 1
        if kind == "num":
            return self._number(val)
        if kind == "word":
            return self._symbol(val)
        if val in ("(", "["):
            inner = self.parse_until(")", "]")
            close = self.take()
            return _bracketed(val, inner, close)
        if val == "{":
            return self.group("}")
        if val == "|":
            inner = self.sum()
            self.take("|")
            return sp.Abs(inner)
        if val == r"\{":
            inner = self.parse_until(r"\}")
            self.take(r"\}")
            return Seq("set", inner.items if isinstance(inner, Seq) else (inner,))
        if kind == "cmd":
            return self._command(val)
        raise ParseError(f"unexpected {val!r}")

    def _number(self, val: str) -> Any:
        if self.at(r"\overline", r"\dot") and "." in val and "e" not in val.lower():
            self.take()
            self.take("{")
            rep = self.take()
            self.take("}")
            if not rep.isdigit():
                raise ParseError(f"repeating part {rep!r} is not digits")
            decimals = len(val.split(".")[1])
            return guard(rational_of(val) + sp.Rational(int(rep), 10 ** decimals * (10 ** len(rep) - 1)))
        return rational_of(val)

    def _symbol(self, val: str) -> Any:
        name = val
        if self.at("_"):
            self.take()
            if self.at("{"):  # x_{12}, x_{ab}: the subscript's raw tokens, never a computed value
                self.take()
                sub = ""
                while not self.at("}"):
                    sub += self.take()
                self.take("}")
            else:
                sub = self.take()
            name = f"{val}_{sub}"
        if name == "e":
            return sp.E
        if name == "i":
            return sp.I
        return sp.Symbol(name)

    def _braced(self) -> Any:
        if self.at("{"):
            self.take()
            return self.group("}")
        return self.postfix()  # \frac12 was rewritten; \sqrt x takes one atom

    def _command(self, val: str) -> Any:
        if val == r"\frac":
            num = self._braced()
            den = self._braced()
            return _arith(num, den, "/")
        if val == r"\sqrt":
            index = None
            if self.at("["):
                self.take()
                index = self.group("]")
            radicand = self._braced()
            if not isinstance(radicand, sp.Expr) or (index is not None and not isinstance(index, sp.Expr)):
                raise ParseError("root of a non-number")
            return guard(sp.sqrt(radicand) if index is None else sp.root(radicand, index))
        if val == r"\pi":
            return sp.pi
        if val in (r"\infty", r"\inf"):
            return sp.oo
        if val in (r"\emptyset", r"\varnothing"):
            return Seq("set", ())
        if val == r"\begin":
            return self._matrix()
        name = val[1:]
        if name in _FUNCS:
            return self._function(name)
        raise ParseError(f"unknown command {val}")

    def _function(self, name: str) -> Any:
        base = None
        if name == "log" and self.at("_"):
            self.take()
            base = self._braced()
        power = None
        if self.at("^"):  # \sin^2 x
            self.take()
            power = self._braced()
        arg = self.power() if not self.at("(") else self.atom()
        if not isinstance(arg, sp.Expr):
            raise ParseError(f"{name} of a non-number")
        value = _FUNCS[name](arg) if base is None else sp.log(arg, base)
        return safe_pow(value, power) if power is not None else value

    def _matrix(self) -> Matrix:
        self.take("{")
        self.take(r"\matrix", r"\array")
        self.take("}")
        rows, row = [], [self.item()]
        while True:
            if self.at("&"):
                self.take()
                row.append(self.item())
            elif self.at("\\\\"):
                self.take()
                rows.append(tuple(row))
                if self.at(r"\end"):
                    break
                row = [self.item()]
            else:
                rows.append(tuple(row))
                break
        self.take(r"\end")
        self.take("{")
        self.take(r"\matrix", r"\array")
        self.take("}")
        if len({len(r) for r in rows}) != 1:
            raise ParseError("ragged matrix")
        return Matrix(tuple(rows))


def _combine(items: list[Any], op: type) -> Any:
    """sp.Add or sp.Mul of many items in one call (folding them one by one is
    quadratic in sympy), with the exact numbers folded first under the size guard."""
    for x in items:
        if not isinstance(x, sp.Expr):
            raise ParseError(f"arithmetic on a {type(x).__name__}")
    number = sp.Integer(0 if op is sp.Add else 1)
    rest = []
    for x in items:
        if x.is_Rational:
            number = guard(number + x if op is sp.Add else number * x)
        else:
            rest.append(x)
    return guard(op(number, *rest)) if rest else number


def _arith(a: Any, b: Any, op: str) -> Any:
    if not isinstance(a, sp.Expr) or not isinstance(b, sp.Expr):
        raise ParseError(f"arithmetic {op!r} on a {type(a).__name__} and a {type(b).__name__}")
    if op == "+":
        return guard(a + b)
    if op == "-":
        return guard(a - b)
    if op == "*":
        return guard(a * b)
    if b == 0:
        raise ParseError("division by zero")
    return guard(a / b)


def _bracketed(open_: str, inner: Any, close: str) -> Any:
    """(x) is x; (a, b) a tuple; [a, b], (a, b], [a, b) intervals; [x] is x."""
    if not isinstance(inner, Seq):
        return inner
    if (open_, close) == ("(", ")"):
        return Seq("tuple", inner.items)
    if len(inner.items) != 2 or not all(isinstance(x, sp.Expr) for x in inner.items):
        raise ParseError("an interval needs two numbers")
    return Intervals(((inner.items[0], inner.items[1], open_ == "[", close == "]"),))


def _open_interval(value: Any) -> Any:
    """(a, b) next to \\cup is the open interval, not a point."""
    if isinstance(value, Seq) and value.kind == "tuple" and len(value.items) == 2:
        return Intervals(((value.items[0], value.items[1], False, False),))
    return value


def _chain_interval(chain: list[Any]) -> Intervals:
    """a < x <= b as the interval (a, b]; a > x > b as (b, a)."""
    low, op1, _var, op2, high = chain
    if op1 in (">", ">=") and op2 in (">", ">="):
        return Intervals(((high, low, op2 == ">=", op1 == ">="),))
    if op1 in ("<", "<=") and op2 in ("<", "<="):
        return Intervals(((low, high, op1 == "<=", op2 == "<="),))
    raise ParseError("mixed inequality directions")


def parse_answer(text: str) -> Any:
    """The value of normalised answer text: a sympy Expr, Relation, Intervals, Seq or Matrix.

    Raises ParseError (not math, or malformed) or TooLarge (guarded number)."""
    if not text.strip():
        raise ParseError("empty answer")
    try:
        return Parser(text).parse()
    except RecursionError as e:
        raise ParseError("nesting too deep") from e
    except (TypeError, AttributeError, ZeroDivisionError, sp.SympifyError, OverflowError) as e:
        raise ParseError(f"cannot evaluate: {type(e).__name__}") from e
