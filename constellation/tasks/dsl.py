"""DSL problems: realistic inputs, programs sampled at graded depth, splits, prompt and critic text.

A problem is a hidden program (``Problem.reference``) shown through a few visible
input -> output examples; held-out inputs (outputs never shown) measure whether a
candidate that reproduces the visible examples is actually the right function.

Sampling, per problem: pick an input format (names, dates, emails, codes, ...),
draw a pool of distinct inputs from it, sample a program with exactly ``depth``
operations (in a normal form, see ``_allowed``) using separators that the format
contains, and keep it only if, on the pool: it runs without error (inputs where it
errors are dropped), every output is 1..MAX_IO_CHARS chars without edge spaces, it
is neither constant nor the identity, and no program with one op fewer computes
the same outputs. The visible inputs are then chosen greedily to contradict the
program's neighbours (one op deleted, another index / case / separator, ...);
guaranteed: visible outputs are distinct and no one-op-fewer program reproduces
them. Not guaranteed: that no other program fits the visible examples; that
residual ambiguity is what ``heldout_correct`` catches.

Prompt (the LM conditions on it; the completion is the program text)::

    john smith -> J. Smith
    mary lee -> M. Lee
    ana o'neil -> A. O'neil
    =>

Everything is deterministic given the ``random.Random`` passed in (no set
iteration, no hash-order dependence).
"""

from __future__ import annotations

import itertools
import random
from typing import NamedTuple

from constellation.protocol.config import TaskConfig
from constellation.protocol.messages import Problem, Split
from constellation.tasks.dsl_inputs import FORMATS, draw_inputs
from verifiers.dsl import (
    DSL_TOKENS,
    Call, Const, DslRuntimeError, DslTimeout, Program, X_NODE, parse, run, to_text,
)

MAX_IO_CHARS = 25  # longest input or output shown in a prompt (the LM context is ~256 chars)
MAX_PROGRAM_CHARS = 60  # longest reference program text (completion budget is 64 tokens)
POOL_EXTRA = 6  # inputs drawn beyond n_visible + n_heldout, to survive dropped ones
MAX_TRIES = 80  # sampling attempts per make_problem call before giving up (None)
# how the visible inputs are chosen (task.visible_mode; see the module docstring)
VISIBLE_MODES = ("discriminating", "random", "narrow")
ERROR = "!err"  # shown to the critic for a held-out input the candidate failed on

# --------------------------------------------------------------------------
# Programs: operations, their arguments and the normal form
# --------------------------------------------------------------------------

ALL_SEPS = [" ", "-", "_", ".", "/", "@", ":", ",", ", "]
CONSTS = [" ", ".", "-", "_", "/", "@", ":", ", ", ". ", "#", "(", ")", "*", " - "]
REPLACEMENTS = [" ", "-", "_", ".", "/", "", ":", "+"]
CASE_OPS = ["upper", "lower", "title"]

# op -> sampling weight (among the ops that _allowed permits at that position)
OP_WEIGHTS = {"upper": 1.0, "lower": 0.5, "title": 0.8, "initials": 0.25, "take": 1.0,
              "drop": 1.0, "split": 1.6, "replace": 0.7, "strip": 0.4, "cat": 1.6}
INDICES = [1, 2, 3, 4, 5, -1, -2, -3, -4]
SPLIT_INDICES = [0, 1, 2, -1, -2]


class _Format(NamedTuple):
    seps: list[str]
    strip_chars: list[str]


_DEFAULT_FORMAT = _Format(ALL_SEPS, ["0", ".", "-", " "])


SELECT_OPS = ("take", "drop", "split", "strip", "replace", "initials")


def _allowed(fn: str, parent: str | None) -> bool:
    """A normal form that removes most programs with a shorter equivalent, so depth means
    difficulty: case ops and cat only above selections (take(upper(x),2) is written
    upper(take(x,2))), cat only at the top or under a case op (cat(cat(a,b),c) is
    cat(a,b,c)), the only nested slice is take(drop(..)), initials only of x, replace, strip."""
    if parent == "initials":
        return fn in ("replace", "strip")
    if parent in SELECT_OPS:
        # slices: only take(drop(e,i),n); any other nesting of take/drop is one slice or two
        return fn not in CASE_OPS and fn != "cat" and not (
            parent in ("take", "drop") and fn in ("take", "drop") and (parent, fn) != ("take", "drop"))
    if parent in CASE_OPS:
        return fn not in CASE_OPS
    if parent == "cat":
        return fn != "cat"
    return True


def _sample_cat(rng: random.Random, n_ops: int, fmt: _Format) -> Program:
    """cat of one or two computed parts with constants around or between them, the
    FlashFill shape: cat(take(x,1),". ",split(x," ",1)). A bare x only joins constants."""
    if n_ops == 1:
        c1, c2 = rng.sample(CONSTS, 2)
        shape = rng.choice([[X_NODE, c1], [c1, X_NODE], [c1, X_NODE, c2]])
    elif n_ops == 2 or rng.random() < 0.25:
        part = _sample_expr(rng, n_ops - 1, fmt, "cat")
        c1, c2 = rng.sample(CONSTS, 2)
        shape = rng.choice([[part, c1], [c1, part], [c1, part, c2]])
    else:
        n_left = rng.randint(1, n_ops - 2)
        left = _sample_expr(rng, n_left, fmt, "cat")
        right = _sample_expr(rng, n_ops - 1 - n_left, fmt, "cat")
        while right == left:
            right = _sample_expr(rng, n_ops - 1 - n_left, fmt, "cat")
        shape = [left, rng.choice(CONSTS), right] if rng.random() < 0.8 else [left, right]
    return Call("cat", tuple(Const(p) if type(p) is str else p for p in shape))


def _sample_expr(rng: random.Random, n_ops: int, fmt: _Format, parent: str | None = None) -> Program:
    """A program with exactly ``n_ops`` operations whose leaves are x (or constants in cat)."""
    if n_ops == 0:
        return X_NODE
    ops = [o for o in OP_WEIGHTS if _allowed(o, parent)]
    fn = rng.choices(ops, weights=[OP_WEIGHTS[o] for o in ops])[0]
    seps = fmt.seps or ALL_SEPS
    if fn == "cat":
        return _sample_cat(rng, n_ops, fmt)
    inner = _sample_expr(rng, n_ops - 1, fmt, fn)
    if fn in ("take", "drop"):
        return Call(fn, (inner, rng.choice(INDICES)))
    if fn == "split":
        return Call(fn, (inner, rng.choice(seps), rng.choice(SPLIT_INDICES)))
    if fn == "replace":
        old = rng.choice([s for s in seps if s != " "] or seps)
        new = " " if parent == "initials" else rng.choice([r for r in REPLACEMENTS if r != old])
        return Call(fn, (inner, old, new))
    if fn == "strip":
        return Call(fn, (inner, rng.choice(fmt.strip_chars or _DEFAULT_FORMAT.strip_chars)))
    return Call(fn, (inner,))


def sample_program(rng: random.Random, depth: int) -> Program:
    """A random program with exactly ``depth`` operations (not checked against inputs)."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    return _sample_expr(rng, depth, _DEFAULT_FORMAT)


# --------------------------------------------------------------------------
# Mutants: the programs one edit away, used to check that every op matters and
# to pick visible inputs that tell the program apart from its neighbours.
# --------------------------------------------------------------------------


def _rewrites(node: Program, local) -> list[Program]:
    """Every program with exactly one node replaced by one of ``local(node)``."""
    out = list(local(node))
    if type(node) is Call:
        a = node.args
        for i, arg in enumerate(a):
            if type(arg) in (Call, Const):
                out += [Call(node.fn, a[:i] + (r,) + a[i + 1:]) for r in _rewrites(arg, local)]
    return out


def _delete_local(node: Program) -> list[Program]:
    """This op removed: replaced by its input, or for cat, one part dropped."""
    if type(node) is not Call:
        return []
    a = node.args
    if node.fn == "cat":
        return [Call("cat", a[:i] + a[i + 1:]) if len(a) > 2 else a[1 - i] for i in range(len(a))]
    return [a[0]]


def _simpler_local(node: Program) -> list[Program]:
    """Deletions, and initials(e) as take(e,1) (what it is on one-word strings)."""
    out = _delete_local(node)
    if type(node) is Call and node.fn == "initials":
        out.append(Call("take", (node.args[0], 1)))
    return out


def _edit_local(node: Program, fmt: _Format) -> list[Program]:
    """This node with one argument or its operation name changed."""
    if type(node) is Const:
        return [Const(c) for c in CONSTS[:6] if c != node.value]
    if type(node) is not Call:
        return []
    fn, a = node.fn, node.args
    if fn in CASE_OPS:
        return [Call(other, a) for other in CASE_OPS if other != fn]
    if fn in ("take", "drop"):
        n = a[1]
        return [Call(fn, (a[0], m)) for m in (n - 1, n + 1, -n) if m not in (0, n)] + [
            Call("drop" if fn == "take" else "take", a)]
    if fn == "split":
        return [Call(fn, (a[0], a[1], i)) for i in (a[2] - 1, a[2] + 1, -1, 0) if i != a[2]] + [
            Call(fn, (a[0], s, a[2])) for s in fmt.seps if s != a[1]]
    if fn == "replace":
        return [Call(fn, (a[0], a[1], r)) for r in REPLACEMENTS[:4] if r != a[2]]
    if fn == "cat":
        return [Call(fn, (a[1], a[0]) + a[2:])]
    return []


def _outputs(program: Program, inputs: list[str]) -> list[str | None]:
    outs: list[str | None] = []
    for x in inputs:
        try:
            outs.append(run(program, x))
        except (DslRuntimeError, DslTimeout):
            outs.append(None)
    return outs


def _choose_visible(rng: random.Random, outs: list[str], mutant_outs: list[list[str | None]],
                    weights: list[float], n_visible: int) -> list[int]:
    """Greedy: indices of inputs that contradict the most (weighted) not-yet-contradicted mutants."""
    alive = [(m, w) for m, w in zip(mutant_outs, weights) if m != outs]  # equal on the pool: ignore
    chosen: list[int] = []
    order = list(range(len(outs)))
    rng.shuffle(order)  # random tie-breaks
    for _ in range(n_visible):
        best = max((i for i in order if i not in chosen),
                   key=lambda i: sum(w for m, w in alive if m[i] != outs[i]))
        chosen.append(best)
        alive = [(m, w) for m, w in alive if m[best] == outs[best]]
    return chosen


def _shown_and_held(mode: str, narrow: list[bool], n_visible: int, n_heldout: int) -> list[int] | None:
    """Indices the visible examples may come from, or None if too few inputs of either kind
    survived (held-out inputs come from the full distribution: ``narrow[i]`` is False)."""
    n_narrow = sum(narrow)
    if mode == "narrow":
        ok = n_narrow >= n_visible and len(narrow) - n_narrow >= n_heldout
        return [i for i, f in enumerate(narrow) if f] if ok else None
    return list(range(len(narrow))) if len(narrow) >= n_visible + n_heldout else None


def _visible_indices(rng: random.Random, mode: str, program: Program, fmt: _Format, pool: list[str],
                     outs: list[str], simpler: list[list[str | None]], shown_from: list[int],
                     n_visible: int) -> list[int]:
    """``discriminating``: greedily contradict the program's neighbours, shallower ones first;
    ``random`` / ``narrow``: a uniform draw from ``shown_from``."""
    if mode != "discriminating":
        return rng.sample(shown_from, n_visible)
    edits = [_outputs(m, pool) for m in _rewrites(program, lambda n: _edit_local(n, fmt))]
    # ruling out a shallower program matters most: weight those mutants high
    return _choose_visible(rng, outs, simpler + edits, [100.0] * len(simpler) + [1.0] * len(edits), n_visible)


def make_problem(rng: random.Random, pid: str, depth: int, n_visible: int, n_heldout: int,
                 mode: str = "discriminating") -> Problem | None:
    """One problem with a program of exactly ``depth`` ops whose visible examples are
    chosen by ``mode`` (one of VISIBLE_MODES), or None if MAX_TRIES samples failed."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if mode not in VISIBLE_MODES:
        raise ValueError(f"visible mode must be one of {', '.join(VISIBLE_MODES)}, got {mode!r}")
    for _ in range(MAX_TRIES):
        spec = rng.choice(FORMATS)
        fmt = _Format(spec.seps, spec.strip_chars)
        pool = draw_inputs(rng, spec.full, (n_heldout if mode == "narrow" else n_visible + n_heldout) + POOL_EXTRA,
                           MAX_IO_CHARS)
        narrow = [False] * len(pool)
        if mode == "narrow":  # drawn after the full pool, so the other modes draw as before
            extra = [x for x in draw_inputs(rng, spec.narrow, n_visible + POOL_EXTRA, MAX_IO_CHARS) if x not in pool]
            pool, narrow = pool + extra, narrow + [True] * len(extra)
        program = _sample_expr(rng, depth, fmt)
        if len(to_text(program)) > MAX_PROGRAM_CHARS:
            continue
        outs = _outputs(program, pool)
        keep = [i for i, o in enumerate(outs) if o is not None and 0 < len(o) <= MAX_IO_CHARS]
        pool, outs, narrow = [pool[i] for i in keep], [outs[i] for i in keep], [narrow[i] for i in keep]
        shown_from = _shown_and_held(mode, narrow, n_visible, n_heldout)
        if shown_from is None:
            continue
        if len(set(outs)) == 1 or outs == pool or any(o != o.strip() for o in outs):
            continue  # constant, identity, or an output whose edge spaces a prompt line hides
        simpler = [_outputs(d, pool) for d in _rewrites(program, _simpler_local)]
        if any(d == outs for d in simpler):
            continue  # some op is dead on these inputs: the program is really shallower
        visible_idx = _visible_indices(rng, mode, program, fmt, pool, outs, simpler, shown_from, n_visible)
        if len({outs[i] for i in visible_idx}) < n_visible:
            continue  # repeated visible outputs say little
        if any(all(d[i] == outs[i] for i in visible_idx) for d in simpler):
            continue  # the visible examples would not rule out a program with one op fewer
        rest = [i for i in range(len(pool)) if i not in visible_idx and not narrow[i]]
        heldout_idx = rng.sample(rest, n_heldout)
        visible = [[pool[i], outs[i]] for i in visible_idx]
        return Problem(
            id=pid, task="dsl", prompt=format_prompt(visible), reference=to_text(program),
            difficulty=depth,
            data={"visible": visible, "heldout_inputs": [pool[i] for i in heldout_idx],
                  "heldout_outputs": [outs[i] for i in heldout_idx]})
    return None


# --------------------------------------------------------------------------
# Ambiguity: does a problem leave its function open? (no model involved)
# --------------------------------------------------------------------------

AMBIGUITY_SAMPLES = 300  # random programs of the reference's depth tried per problem


def _one_op_programs(fmt: _Format) -> list[Program]:
    """Every program of one op on x (cat aside) with the format's arguments: ~100."""
    out: list[Program] = [Call(fn, (X_NODE,)) for fn in CASE_OPS + ["initials"]]
    out += [Call(fn, (X_NODE, n)) for fn in ("take", "drop") for n in INDICES]
    out += [Call("split", (X_NODE, s, i)) for s in fmt.seps for i in SPLIT_INDICES]
    out += [Call("replace", (X_NODE, s, r)) for s in fmt.seps for r in REPLACEMENTS if r != s]
    return out + [Call("strip", (X_NODE, c)) for c in fmt.strip_chars]


def open_alternative(problem: Problem, n_samples: int = AMBIGUITY_SAMPLES) -> str | None:
    """The text of a program with as many ops as the reference that reproduces every
    visible example but not every held-out output (an error counts as a difference),
    or None. Tried: the reference with one node edited (another index, case,
    separator, ...) or one op on x swapped for any other op on x (take(x,4) for
    split(x," ",0)), then ``n_samples`` random programs of its depth over the
    separators its inputs contain, drawn from a Random seeded by the problem.
    Finding one proves the visible examples leave the function open; None does not
    prove they pin it down (the search is not exhaustive)."""
    shown_in, shown_out = [i for i, _ in problem.data["visible"]], [o for _, o in problem.data["visible"]]
    held_in, held_out = list(problem.data["heldout_inputs"]), list(problem.data["heldout_outputs"])
    fmt = _Format([s for s in ALL_SEPS if any(s in x for x in shown_in + held_in)], _DEFAULT_FORMAT.strip_chars)
    on_x = _one_op_programs(fmt)

    def local(node: Program) -> list[Program]:
        swaps = on_x if type(node) is Call and node.fn != "cat" and node.args[0] == X_NODE else []
        return _edit_local(node, fmt) + swaps

    rng = random.Random(f"ambiguity/{problem.id}/{problem.reference}")
    samples = (_sample_expr(rng, problem.difficulty, fmt) for _ in range(n_samples))  # difficulty = ops
    for alt in itertools.chain(_rewrites(parse(problem.reference), local), samples):
        if _outputs(alt, shown_in) == shown_out and _outputs(alt, held_in) != held_out:
            return to_text(alt)
    return None


# --------------------------------------------------------------------------
# Prompt and critic text
# --------------------------------------------------------------------------


def format_prompt(visible: list[list[str]]) -> str:
    """One "input -> output" line per example, then "=>"; the completion is the program.

    e.g. "john smith -> J. Smith\\nmary lee -> M. Lee\\n=>" (no trailing space)."""
    return "".join(f"{i} -> {o}\n" for i, o in visible) + "=>"


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 3] + "..."


def critic_text(problem: Problem, candidate_text: str, heldout_outputs: list[str | None] | None) -> str:
    """The prompt, the candidate program, then one "input ~> candidate output" line per
    held-out input (ERROR where the candidate failed; "~> !parse" when it did not parse).
    Never contains the true held-out outputs."""
    lines = [format_prompt(problem.data["visible"]) + _clip(candidate_text.strip(), 2 * MAX_PROGRAM_CHARS)]
    if heldout_outputs is None:
        lines.append("~> !parse")
    else:
        for inp, out in zip(problem.data["heldout_inputs"], heldout_outputs):
            lines.append(f"{inp} ~> {ERROR if out is None else _clip(out, MAX_IO_CHARS + 5)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------


def _make_set(rng: random.Random, prefix: str, n: int, depths: list[int], cfg: TaskConfig,
              exclude: set[str], unique: bool) -> list[Problem]:
    """n problems, depth i-th = depths[i % len(depths)], programs not in ``exclude``."""
    out: list[Problem] = []
    seen: set[str] = set()
    for i in range(n):
        d = depths[i % len(depths)]
        for _ in range(200):
            p = make_problem(rng, f"{prefix}{i + 1:04d}", d, cfg.n_visible, cfg.n_heldout, cfg.visible_mode)
            if p is None or p.reference in exclude or (unique and p.reference in seen):
                continue
            seen.add(p.reference)
            out.append(p)
            break
        else:  # the task cannot make this many: a ValueError, refused before the run starts
            field = {"E": "task.n_eval", "T": "task.n_train", "L": "task.n_labeled"}.get(prefix, "problems")
            raise ValueError(f"{field} = {n}: the dsl task could not sample problem {prefix}{i + 1:04d} at depth "
                             f"{d} ({len(seen)} distinct programs so far, {len(exclude)} excluded); allowed: "
                             f"fewer problems, or more depths (task.depths, task.labeled_max_depth)")
    return out


def tokenizer_tokens() -> list[str]:
    """The DSL's keywords, one token each in the tiny model's vocabulary."""
    return list(DSL_TOKENS)


def problem_tasks(cfg: TaskConfig) -> tuple[str, ...]:
    """The Problem.task of every problem this task makes (runtime/config_check.py matches the verifier)."""
    return ("dsl",)


def make_split(cfg: TaskConfig, seed: int) -> Split:
    """Deterministic for (cfg, seed). Eval is drawn first with distinct programs; L and
    train exclude every eval program. L and train may share programs (at depth 1 there
    are only a few hundred), never problems.

    ``task.visible_mode`` and ``task.n_visible`` apply to L too: the warm start
    must teach the base on the kind of prompt it is evaluated on (in the narrow
    mode, which programs the shown examples leave open and how often each is
    the hidden one)."""
    if not cfg.depths or min(cfg.depths) < 1:
        raise ValueError(f"task.depths must be non-empty and >= 1, got {cfg.depths}")
    if cfg.labeled_max_depth < 1:
        raise ValueError(f"task.labeled_max_depth must be >= 1, got {cfg.labeled_max_depth}")
    ev = _make_set(random.Random(f"dsl/{seed}/eval"), "E", cfg.n_eval, list(cfg.depths), cfg, set(), unique=True)
    eval_programs = {p.reference for p in ev}
    train = _make_set(random.Random(f"dsl/{seed}/train"), "T", cfg.n_train, list(cfg.depths), cfg,
                      eval_programs, unique=False)
    labeled = _make_set(random.Random(f"dsl/{seed}/labeled"), "L", cfg.n_labeled,
                        list(range(1, cfg.labeled_max_depth + 1)), cfg, eval_programs, unique=False)
    return Split(labeled=labeled, train=train, eval=ev)
