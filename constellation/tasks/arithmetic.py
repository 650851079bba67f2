"""The "arithmetic" task: multi-digit addition and multiplication with a scratchpad (as in STaR).

A problem asks for ``a+b`` or ``a*b``; the completion is a scratchpad that
works digit by digit from the right, then the answer line. Each digit line
shows ``digit op digit + carry = value`` and, after the comma, the result
written so far::

    prompt      Q: 624*37
    completion  624*7
                4*7+0=28 ,8
                2*7+2=16 ,68
                6*7+1=43 ,4368
                624*3
                4*3+0=12 ,2
                2*3+1=7 ,72
                6*3+0=18 ,1872
                4368+18720
                8+0+0=8 ,8
                [...]
                0+1+1=2 ,23088
                A: 23088

Difficulty is the number of digits ``d`` of the first operand (``task.depths``
are digit counts here, ``task.labeled_max_depth`` the most digits in the
labeled set). Addition: both operands have ``d`` digits. Multiplication: the
second operand has 2 digits for d in 2..3 and 1 digit otherwise, which keeps
every prompt + completion under 256 characters (tested) for d <= 5.

Grading lives in verifiers/arithmetic.py: it reads only the last
``A: <digits>`` line, never the scratchpad. ``Problem.reference``
is the answer (as for math tasks), ``Problem.data["solution"]`` the reference
scratchpad (the warm-start target), ``data["answer"]`` the answer again.

Rationalization (``hint_prompt``): the question with the answer in
parentheses, ``Q: 624*37 (23088)``. A share of the labeled set
(``HINTED_SHARE``) is repeated with hint prompts so that the warm-started
model has seen hints and learns to use them.
"""

from __future__ import annotations

import random

from constellation.protocol.config import TaskConfig
from constellation.protocol.messages import Problem, Split
from verifiers.arithmetic import MAX_TEXT

MAX_DIGITS = 5
HINTED_SHARE = 0.25  # labeled problems repeated with a hint prompt (so hints mean something to the model)


# --------------------------------------------------------------------------
# Scratchpads, prompts, critic text
# --------------------------------------------------------------------------


def add_lines(a: int, b: int) -> list[str]:
    """Digit lines of a + b: ``x+y+carry=s ,written-so-far``; a last line for a final carry."""
    xs, ys = str(a)[::-1], str(b)[::-1]
    lines, written, carry, i = [], "", 0, 0
    while i < max(len(xs), len(ys)) or carry:
        x = int(xs[i]) if i < len(xs) else 0
        y = int(ys[i]) if i < len(ys) else 0
        s = x + y + carry
        written = str(s % 10) + written
        lines.append(f"{x}+{y}+{carry}={s} ,{written}")
        carry, i = s // 10, i + 1
    return lines


def mul_digit_lines(a: int, k: int) -> list[str]:
    """Digit lines of a * k for one digit k; the last line writes its whole value."""
    xs = str(a)[::-1]
    lines, written, carry = [], "", 0
    for i, ch in enumerate(xs):
        v = int(ch) * k + carry
        written = (str(v) if i == len(xs) - 1 else str(v % 10)) + written
        lines.append(f"{ch}*{k}+{carry}={v} ,{written}")
        carry = v // 10
    return lines


def scratchpad(a: int, op: str, b: int) -> str:
    """The reference completion for ``a op b`` (op "+" or "*"), ending in ``A: <result>``."""
    if op == "+":
        lines = add_lines(a, b)
    elif op == "*":
        lines, partials = [], []
        for place, digit in enumerate(reversed(str(b))):
            lines.append(f"{a}*{digit}")
            lines += mul_digit_lines(a, int(digit))
            partials.append(a * int(digit) * 10 ** place)
        total = partials[0]
        for p in partials[1:]:
            lines.append(f"{total}+{p}")
            lines += add_lines(total, p)
            total += p
    else:
        raise ValueError(f"op must be '+' or '*', got {op!r}")
    return "\n".join(lines + [f"A: {a + b if op == '+' else a * b}"])


def question(a: int, op: str, b: int) -> str:
    return f"Q: {a}{op}{b}\n"


def hint_prompt(problem: Problem) -> str:
    """The prompt with the answer given as a hint (STaR rationalization)."""
    return f"{problem.prompt.rstrip()} ({problem.data['answer']})\n"


def critic_text(problem: Problem, candidate_text: str, heldout_outputs: list[str | None] | None) -> str:
    """The question and the candidate's scratchpad (never the true answer)."""
    return problem.prompt + candidate_text.strip()[:MAX_TEXT]


# --------------------------------------------------------------------------
# Problems and splits
# --------------------------------------------------------------------------


def _operands(rng: random.Random, digits: int, op: str) -> tuple[int, int]:
    lo = 10 ** (digits - 1) if digits > 1 else 0
    a = rng.randint(lo, 10 ** digits - 1)
    b_digits = digits if op == "+" else (2 if 2 <= digits <= 3 else 1)
    b = rng.randint(10 ** (b_digits - 1) if b_digits > 1 else 0, 10 ** b_digits - 1)
    return a, b


def make_problem(pid: str, a: int, op: str, b: int) -> Problem:
    answer = str(a + b if op == "+" else a * b)
    return Problem(id=pid, task="arithmetic", prompt=question(a, op, b), reference=answer,
                   difficulty=len(str(a)), data={"answer": answer, "solution": scratchpad(a, op, b)})


def _make_set(rng: random.Random, prefix: str, n: int, digits: list[int], exclude: set[str],
              unique: bool) -> list[Problem]:
    out: list[Problem] = []
    seen: set[str] = set()
    for i in range(n):
        d = digits[i % len(digits)]
        for _ in range(200):
            op = rng.choice("+*")
            a, b = _operands(rng, d, op)
            q = question(a, op, b)
            if q in exclude or (unique and q in seen):
                continue
            seen.add(q)
            out.append(make_problem(f"{prefix}{i + 1:04d}", a, op, b))
            break
        else:
            raise ValueError(f"could not draw problem {prefix}{i + 1:04d} with {d} digits: only {len(seen)} "
                             f"distinct questions left after excluding {len(exclude)}; use fewer problems "
                             f"or more digits (task.depths)")
    return out


def problem_tasks(cfg: TaskConfig) -> tuple[str, ...]:
    """The Problem.task of every problem this task makes (runtime/config_check.py matches the verifier)."""
    return ("arithmetic",)


def make_split(cfg: TaskConfig, seed: int) -> Split:
    """Deterministic for (cfg, seed). Eval questions are distinct and occur in
    neither L nor train. L holds problems of 1..labeled_max_depth digits, plus
    hinted copies of a HINTED_SHARE of them (ids ending in "h")."""
    if not cfg.depths or min(cfg.depths) < 1 or max(cfg.depths) > MAX_DIGITS:
        raise ValueError(f"task.depths are digit counts for arithmetic: 1..{MAX_DIGITS}, got {cfg.depths}")
    if not 1 <= cfg.labeled_max_depth <= MAX_DIGITS:
        raise ValueError(f"task.labeled_max_depth must be 1..{MAX_DIGITS} digits, got {cfg.labeled_max_depth}")
    ev = _make_set(random.Random(f"arith/{seed}/eval"), "E", cfg.n_eval, list(cfg.depths), set(), unique=True)
    eval_q = {p.prompt for p in ev}
    train = _make_set(random.Random(f"arith/{seed}/train"), "T", cfg.n_train, list(cfg.depths), eval_q, False)
    labeled = _make_set(random.Random(f"arith/{seed}/labeled"), "L", cfg.n_labeled,
                        list(range(1, cfg.labeled_max_depth + 1)), eval_q, False)
    rng = random.Random(f"arith/{seed}/hints")
    hinted = [Problem(id=p.id + "h", task=p.task, prompt=hint_prompt(p), reference=p.reference,
                      difficulty=p.difficulty, data=p.data)
              for p in rng.sample(labeled, int(HINTED_SHARE * len(labeled)))]
    return Split(labeled=labeled + hinted, train=train, eval=ev)
