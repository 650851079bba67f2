"""A FlashFill-style string DSL: programs map one input string ``x`` to an output string.

Grammar (the canonical printed form: prefix calls, no spaces outside literals)::

    expr   := "x"                                   the input string
            | STRING                                a constant (meaningful inside cat)
            | "upper(" expr ")"                     e.upper()
            | "lower(" expr ")"                     e.lower()
            | "title(" expr ")"                     e.title()  (Python: "o'neil" -> "O'Neil")
            | "initials(" expr ")"                  first char of each whitespace word
            | "take(" expr "," INT ")"              e[:n]    (n < 0: all but the last -n)
            | "drop(" expr "," INT ")"              e[n:]    (n < 0: the last -n chars)
            | "split(" expr "," STRING "," INT ")"  e.split(s)[i]  (i < 0 counts from the end)
            | "replace(" expr "," STRING "," STRING ")"   every occurrence
            | "strip(" expr "," STRING ")"          e.strip(chars), both ends
            | "cat(" expr "," expr ("," expr)* ")"  concatenation of 2..8 parts
    STRING := '"' ( any char but '"', '\\' or a control char | '\\"' | '\\\\' )* '"'
    INT    := "-"? digit{1,3}

e.g. ``upper(x)``, ``cat(take(x,1),". ",split(x," ",-1))``. The parser also accepts
whitespace between tokens; ``to_text`` prints without it, and
``parse(to_text(p)) == p`` for every program.

What the verifier guarantees:
  * Model text is only ever parsed by the hand-written parser below and walked by
    ``run``; it never reaches eval/exec/import, and nothing it says touches files,
    the network or the process.
  * Every candidate text gets a Verdict, quickly: texts over MAX_TEXT chars, nesting
    over MAX_DEPTH, junk bytes, unbalanced parens and unterminated strings are a
    ``parse_error``; a run that uses more than ``step_limit`` steps (1 per node
    evaluated + 1 per character it produces) or builds a string over MAX_STRING
    chars is a ``timeout``; a split index out of range or an empty split separator
    is a ``runtime_error``. All other operations are total (Python slice semantics).
  * ``pass`` means: every visible example is reproduced exactly (string equality).
    ``heldout_correct`` means: the program is right on every input the problem
    knows: every held-out output AND every visible example reproduced exactly
    (a program that fails a visible example is not the hidden function, whatever
    it does on the held-out inputs; pass@k counts only these).
What it does not guarantee:
  * That a ``pass`` program is the hidden one, or correct beyond the listed
    inputs: a program that matches the visible examples can still fail held-out
    ones (that is what ``heldout_correct`` measures).
  * Equivalence of programs: two different texts computing the same function are
    different programs to ``parse``/``to_text``; only their outputs are compared.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from constellation.protocol.messages import Candidate, Problem, Verdict

MAX_TEXT = 2000  # chars of program text the parser accepts
MAX_DEPTH = 24  # nesting levels the parser accepts (the evaluator recurses once per level)
MAX_STRING = 1000  # longest string any operation may produce
MAX_CAT = 8  # most parts of one cat(...)
MAX_INT_DIGITS = 3

# Each entry: argument kinds. E = expression, S = string literal, I = integer literal.
SIGNATURES: dict[str, str] = {
    "upper": "E", "lower": "E", "title": "E", "initials": "E",
    "take": "EI", "drop": "EI", "split": "ESI", "replace": "ESS", "strip": "ES",
    "cat": "EE",  # variadic: 2..MAX_CAT expressions
}

# Single tokens for a character-level tokenizer; every other char is its own token.
DSL_TOKENS: list[str] = [f"{name}(" for name in SIGNATURES]


class DslParseError(ValueError):
    """The text is not a program of the grammar above."""


class DslRuntimeError(Exception):
    """A defined failure of a well-formed program on one input (e.g. split index)."""


class DslTimeout(Exception):
    """The run exceeded its step limit or built a string longer than MAX_STRING."""


# --------------------------------------------------------------------------
# AST: frozen, hashable, comparable by value.
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class X:
    """The input string."""


@dataclass(frozen=True, slots=True)
class Const:
    value: str


@dataclass(frozen=True, slots=True)
class Call:
    fn: str  # a key of SIGNATURES
    args: tuple  # per SIGNATURES kind: Program (E), str (S), int (I)


Program = X | Const | Call
X_NODE = X()


def depth(program: Program) -> int:
    """Difficulty of a program: the number of operations (Call nodes) in it.
    ``upper(x)`` is 1, ``cat(upper(x),"-",take(x,2))`` is 3."""
    if type(program) is not Call:
        return 0
    return 1 + sum(depth(a) for a in program.args if isinstance(a, (X, Const, Call)))


# --------------------------------------------------------------------------
# Printer and parser
# --------------------------------------------------------------------------


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_text(program: Program) -> str:
    """The canonical text of a program (what the LM is trained to emit)."""
    t = type(program)
    if t is X:
        return "x"
    if t is Const:
        return _quote(program.value)
    if t is not Call:
        raise TypeError(f"not a program node: {program!r}")
    parts = []
    for arg in program.args:
        if type(arg) is str:
            parts.append(_quote(arg))
        elif type(arg) is int:
            parts.append(str(arg))
        else:
            parts.append(to_text(arg))
    return f"{program.fn}(" + ",".join(parts) + ")"


def _snippet(text: str, i: int) -> str:
    return repr(text[max(0, i - 10): i + 10])


class _Parser:
    """Recursive descent over ``text``; recursion is bounded by MAX_DEPTH."""

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def error(self, what: str) -> DslParseError:
        return DslParseError(f"{what} at char {self.i} near {_snippet(self.s, self.i)}")

    def skip_ws(self) -> None:
        s, i = self.s, self.i
        while i < len(s) and s[i] in " \t\r\n":
            i += 1
        self.i = i

    def expect(self, ch: str) -> None:
        self.skip_ws()
        if self.i >= len(self.s) or self.s[self.i] != ch:
            raise self.error(f"expected {ch!r}")
        self.i += 1

    def string(self) -> str:
        s, i = self.s, self.i + 1  # past the opening quote
        out = []
        while True:
            if i >= len(s):
                raise self.error("unterminated string")
            c = s[i]
            if c == '"':
                self.i = i + 1
                return "".join(out)
            if c == "\\":
                if i + 1 < len(s) and s[i + 1] in '"\\':
                    out.append(s[i + 1])
                    i += 2
                    continue
                self.i = i
                raise self.error("bad escape (only \\\" and \\\\)")
            if c < " " or c == "\x7f":
                self.i = i
                raise self.error("control character in string")
            out.append(c)
            i += 1

    def integer(self) -> int:
        self.skip_ws()
        s, start = self.s, self.i
        i = start + 1 if start < len(s) and s[start] == "-" else start
        j = i
        while j < len(s) and "0" <= s[j] <= "9":
            j += 1
        if j == i or j - i > MAX_INT_DIGITS:
            raise self.error(f"expected an integer of 1..{MAX_INT_DIGITS} digits")
        self.i = j
        return int(s[start:j])

    def literal(self) -> str:
        self.skip_ws()
        if self.i >= len(self.s) or self.s[self.i] != '"':
            raise self.error("expected a string literal")
        return self.string()

    def expr(self, level: int) -> Program:
        if level > MAX_DEPTH:
            raise self.error(f"nesting deeper than {MAX_DEPTH}")
        self.skip_ws()
        s, i = self.s, self.i
        if i >= len(s):
            raise self.error("unexpected end of text")
        if s[i] == '"':
            return Const(self.string())
        j = i
        while j < len(s) and "a" <= s[j] <= "z":
            j += 1
        name = s[i:j]
        if name == "x":
            self.i = j
            return X_NODE
        if name not in SIGNATURES:
            raise self.error("expected x, a string or an operation name")
        self.i = j
        self.expect("(")
        kinds = SIGNATURES[name]
        args: list = []
        for k, kind in enumerate(kinds):
            if k:
                self.expect(",")
            if kind == "E":
                args.append(self.expr(level + 1))
            elif kind == "S":
                args.append(self.literal())
            else:
                args.append(self.integer())
        if name == "cat":
            while True:
                self.skip_ws()
                if self.i < len(s) and s[self.i] == ",":
                    if len(args) >= MAX_CAT:
                        raise self.error(f"cat takes at most {MAX_CAT} parts")
                    self.i += 1
                    args.append(self.expr(level + 1))
                else:
                    break
        self.expect(")")
        return Call(name, tuple(args))


def parse(text: str) -> Program:
    """Program text -> AST, or DslParseError. Accepts any str without raising anything else."""
    if not isinstance(text, str):
        raise DslParseError(f"program text must be str, got {type(text).__name__}")
    if len(text) > MAX_TEXT:
        raise DslParseError(f"program text of {len(text)} chars exceeds {MAX_TEXT}")
    p = _Parser(text)
    program = p.expr(0)
    p.skip_ws()
    if p.i != len(text):
        raise p.error("trailing text after the program")
    return program


# --------------------------------------------------------------------------
# Interpreter
# --------------------------------------------------------------------------


def _eval(node: Program, x: str, budget: list[int]) -> str:
    """budget[0]: steps left. Every Call/Const costs 1 + len(its result)."""
    t = type(node)
    if t is X:
        return x
    if t is Const:
        r = node.value
    else:
        fn, a = node.fn, node.args
        v = _eval(a[0], x, budget)
        if fn == "cat":
            parts, total = [v], len(v)
            for arg in a[1:]:
                part = _eval(arg, x, budget)
                total += len(part)
                if total > MAX_STRING:
                    raise DslTimeout(f"cat result longer than {MAX_STRING} chars")
                parts.append(part)
            r = "".join(parts)
        elif fn == "split":
            sep, idx = a[1], a[2]
            if not sep:
                raise DslRuntimeError("split with an empty separator")
            pieces = v.split(sep)
            if not -len(pieces) <= idx < len(pieces):
                raise DslRuntimeError(f"split index {idx} out of range for {len(pieces)} parts")
            r = pieces[idx]
        elif fn == "take":
            r = v[: a[1]]
        elif fn == "drop":
            r = v[a[1]:]
        elif fn == "upper":
            r = v.upper()
        elif fn == "lower":
            r = v.lower()
        elif fn == "title":
            r = v.title()
        elif fn == "initials":
            r = "".join(w[0] for w in v.split())
        elif fn == "replace":
            old, new = a[1], a[2]
            # predict the length first so a growing replace never allocates a huge string
            n = v.count(old) if old else len(v) + 1
            if len(v) + n * (len(new) - len(old)) > MAX_STRING:
                raise DslTimeout(f"replace result longer than {MAX_STRING} chars")
            r = v.replace(old, new)
        elif fn == "strip":
            r = v.strip(a[1])
        else:
            raise DslRuntimeError(f"unknown operation {fn!r}")
    if len(r) > MAX_STRING:  # upper() can grow a string ("ß" -> "SS")
        raise DslTimeout(f"string longer than {MAX_STRING} chars")
    budget[0] -= 1 + len(r)
    if budget[0] < 0:
        raise DslTimeout("step limit exceeded")
    return r


def run(program: Program, x: str, step_limit: int = 10_000) -> str:
    """Output of ``program`` on input ``x``; DslRuntimeError or DslTimeout on failure."""
    try:
        return _eval(program, x, [step_limit])
    except RecursionError as e:  # only for trees built in code; parse() caps nesting
        raise DslRuntimeError("program nested too deeply to evaluate") from e


# --------------------------------------------------------------------------
# Verifier
# --------------------------------------------------------------------------


def _parse_uncached(text: str) -> Program | DslParseError:
    try:
        return parse(text)
    except DslParseError as e:
        return e


# Candidates repeat a lot (k samples per problem); the AST is immutable, so share it.
_parse_cached = functools.lru_cache(maxsize=8192)(_parse_uncached)


def _run_safe(program: Program, x: str, step_limit: int) -> tuple[str | None, str, str]:
    """(output or None, status if failed, detail). Never raises."""
    try:
        return run(program, x, step_limit), "", ""
    except DslTimeout as e:
        return None, "timeout", str(e)
    except DslRuntimeError as e:
        return None, "runtime_error", str(e)
    except Exception as e:  # a bug in this file must still be one candidate's verdict
        return None, "runtime_error", f"internal {type(e).__name__}: {e}"


def verify(problem: Problem, candidate: Candidate, step_limit: int = 10_000) -> Verdict:
    """Run the candidate program on the visible and held-out inputs of a "dsl" problem.

    status: "parse_error" | "timeout" / "runtime_error" (the program failed on some
    visible input; a timeout wins over a runtime error) | "pass" (every visible
    output reproduced) | "fail". Never raises on any candidate text."""
    visible = problem.data["visible"]
    heldout_inputs = problem.data["heldout_inputs"]
    heldout_truth = problem.data["heldout_outputs"]
    text = candidate.text.strip()
    # over-long texts skip the cache so it never holds megabyte keys
    program = _parse_cached(text) if len(text) <= MAX_TEXT else _parse_uncached(text)
    if isinstance(program, DslParseError):
        return Verdict(candidate_id=candidate.id, problem_id=problem.id, status="parse_error",
                       visible_passed=0, visible_total=len(visible), heldout_correct=None,
                       heldout_outputs=None, detail=str(program)[:200])
    passed, errors = 0, {}
    for inp, want in visible:
        out, err, detail = _run_safe(program, inp, step_limit)
        if err:
            errors.setdefault(err, detail)
        elif out == want:
            passed += 1
    heldout_outputs = [_run_safe(program, inp, step_limit)[0] for inp in heldout_inputs]
    heldout_correct = passed == len(visible) and all(o is not None and o == t
                                                     for o, t in zip(heldout_outputs, heldout_truth))
    if "timeout" in errors:
        status, detail = "timeout", errors["timeout"]
    elif "runtime_error" in errors:
        status, detail = "runtime_error", errors["runtime_error"]
    else:
        status, detail = ("pass" if passed == len(visible) else "fail"), ""
    return Verdict(candidate_id=candidate.id, problem_id=problem.id, status=status,
                   visible_passed=passed, visible_total=len(visible),
                   heldout_correct=heldout_correct, heldout_outputs=heldout_outputs,
                   detail=detail[:200])
