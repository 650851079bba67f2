"""The "jsonl" task: a local JSONL file of math questions or code problems (``task.path``).

One JSON object per line; blank lines are skipped; fields not listed are ignored.

math lines (Problem.task = "math", verified by the "math" verifier):
    question   str, required
    answer     str or number, required. Understood forms:
                 GSM8K   "...worked solution...\\n#### 72"  -> gold "72", rationale before "####"
                         (calculator notes <<48/2=24>> dropped, thousands commas in the gold removed)
                 MATH    a solution containing \\boxed{...}  -> gold = the last box's content
                         (nested braces balanced), rationale = the whole solution
                 plain   "3/4"                               -> gold "3/4", no rationale
    rationale  str, optional: a worked solution (overrides the one read from ``answer``)
  Problem: prompt "Q: <question>\\n", reference = the gold answer, data =
  {"answer": gold, "solution": warm-start target or absent}. The solution is
  the MATH solution as written, or "<rationale>\\nThe answer is <gold>.".

code lines (Problem.task = "code", verified by the "code" verifier):
    prompt       str, required: what the model continues (a signature and
                 docstring) or a task statement
    tests        list of str (or one str), required: Python run in the
                 program's namespace, e.g. "assert add(1, 2) == 3"
    entry_point  str, optional: the function under test (a test defining
                 check(candidate) is called with it)
    solution     str, optional: a reference completion (warm start)
  The program run is prompt + completion when the prompt defines
  ``def <entry_point>(``, otherwise the completion alone.

The kind of a file is the kind of its first line; a line of the other kind,
bad JSON or a bad field is a ``JsonlTaskError`` naming ``file:line`` and the
field. Splits: the lines are shuffled with the task seed and cut in order
into n_eval evaluation, n_train training and n_labeled labeled problems;
a shorter file fills eval first, then train, then labeled (so the labeled
set may be smaller than asked, or empty; an empty eval set is an error).
Only labeled problems with a solution are used by the warm start.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any, Iterator

from constellation.protocol.config import TaskConfig
from constellation.protocol.messages import Problem, Split

CALCULATOR_NOTE = re.compile(r"<<[^<>]*>>")
THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_LINE_CHARS = 1_000_000


class JsonlTaskError(ValueError):
    """A line of a JSONL task file that cannot become a Problem."""


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced;
    None when there is no box. Raises ValueError for a box whose braces never close."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    if not starts:
        return None
    start = starts[-1]
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{" and text[i - 1] != "\\":
            depth += 1
        elif text[i] == "}" and text[i - 1] != "\\":
            depth -= 1
            if depth == 0:
                return text[start:i].strip()
    raise ValueError("\\boxed{ is never closed (unbalanced braces)")


def split_math_answer(answer: str) -> tuple[str, str | None, str | None]:
    """A math line's ``answer`` -> (gold, rationale, solution-as-written or None)."""
    if "####" in answer:
        body, _, gold = answer.rpartition("####")
        gold = THOUSANDS.sub("", gold.strip())
        rationale = CALCULATOR_NOTE.sub("", body).strip() or None
        return gold, rationale, None
    boxed = last_boxed(answer)
    if boxed is not None:
        return boxed, answer.strip(), answer.strip()
    return answer.strip(), None, None


def _field(obj: dict[str, Any], name: str, where: str, kinds: tuple[type, ...], required: bool = True) -> Any:
    value = obj.get(name)
    if value is None:
        if required:
            raise JsonlTaskError(f"{where}: missing field {name!r} (fields: {', '.join(sorted(obj)) or 'none'})")
        return None
    if not isinstance(value, kinds) or isinstance(value, bool):
        raise JsonlTaskError(f"{where}: field {name!r} must be {' or '.join(k.__name__ for k in kinds)}, "
                             f"got {type(value).__name__}")
    if isinstance(value, str) and not value.strip():
        raise JsonlTaskError(f"{where}: field {name!r} is empty")
    return value


def math_problem(obj: dict[str, Any], pid: str, where: str) -> Problem:
    question = _field(obj, "question", where, (str,))
    raw = _field(obj, "answer", where, (str, int, float))
    try:
        gold, rationale, written = split_math_answer(str(raw))
    except ValueError as e:
        raise JsonlTaskError(f"{where}: field 'answer': {e}") from e
    if not gold:
        raise JsonlTaskError(f"{where}: field 'answer' holds no final answer ({str(raw)[-40:]!r})")
    given = _field(obj, "rationale", where, (str,), required=False)
    if given is not None:
        rationale, written = given.strip(), None
    solution = written or (f"{rationale}\nThe answer is {gold}." if rationale else None)
    data: dict[str, Any] = {"answer": gold}
    if solution:
        data["solution"] = solution
    return Problem(id=pid, task="math", prompt=f"Q: {question.strip()}\n", reference=gold, data=data)


def code_problem(obj: dict[str, Any], pid: str, where: str) -> Problem:
    prompt = _field(obj, "prompt", where, (str,))
    tests = _field(obj, "tests", where, (list, str))
    tests = [tests] if isinstance(tests, str) else tests
    if not tests or not all(isinstance(t, str) and t.strip() for t in tests):
        raise JsonlTaskError(f"{where}: field 'tests' must be a non-empty list of non-empty strings")
    entry = _field(obj, "entry_point", where, (str,), required=False)
    if entry is not None and not IDENTIFIER.match(entry):
        raise JsonlTaskError(f"{where}: field 'entry_point' must be a Python identifier, got {entry!r}")
    solution = _field(obj, "solution", where, (str,), required=False)
    prepend = entry is not None and f"def {entry}(" in prompt
    return Problem(id=pid, task="code", prompt=prompt, reference=solution,
                   data={"tests": tests, "entry_point": entry, "prepend_prompt": prepend})


def kind_of(obj: dict[str, Any]) -> str | None:
    if "question" in obj:
        return "math"
    if "prompt" in obj and "tests" in obj:
        return "code"
    return None


def _json_line(raw: bytes, where: str) -> object:
    """One line's bytes -> its JSON value, or a JsonlTaskError naming the line and the cause
    (not UTF-8: a binary file; invalid JSON; a lone surrogate escape such as "\\ud800")."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise JsonlTaskError(f"{where}: not UTF-8 text (byte 0x{raw[e.start]:02x} at byte {e.start + 1}); "
                             f"a JSONL task file is text, one JSON object a line") from None
    try:
        obj = json.loads(line)
        json.dumps(obj, ensure_ascii=False).encode("utf-8")  # a lone surrogate cannot be stored or sent
    except json.JSONDecodeError as e:
        raise JsonlTaskError(f"{where}: not valid JSON ({e.msg.removesuffix(' at')} at column {e.colno})") from None
    except UnicodeEncodeError:
        raise JsonlTaskError(f"{where}: a lone surrogate escape (\\ud800-\\udfff) is not text") from None
    except RecursionError:
        raise JsonlTaskError(f"{where}: JSON nested too deeply") from None
    return obj


def json_objects(path: str | Path) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """(line number, "file:line", object) of every non-blank line of a JSONL file, or a
    JsonlTaskError naming the file and line: unreadable, too long, not JSON, not an object,
    or no line at all (an empty file)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise JsonlTaskError(f"task.path = {str(path)!r}: no such file (a JSONL task set is a local file)")
    try:
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
    except OSError as e:
        raise JsonlTaskError(f"task.path = {str(path)!r}: cannot read ({e.strerror})") from None
    seen = 0
    for lineno, raw in enumerate(lines, 1):
        where = f"{path}:{lineno}"
        if not raw.strip():
            continue
        if len(raw) > MAX_LINE_CHARS:
            raise JsonlTaskError(f"{where}: line of {len(raw)} bytes (at most {MAX_LINE_CHARS})")
        obj = _json_line(raw, where)
        if not isinstance(obj, dict):
            raise JsonlTaskError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        seen += 1
        yield lineno, where, obj
    if not seen:
        raise JsonlTaskError(f"{path}: no problems (the file is empty)")


def load(path: str | Path) -> list[Problem]:
    """Every line of the file as a Problem with id "J<line number>", in file order."""
    problems: list[Problem] = []
    kind = None
    for lineno, where, obj in json_objects(path):
        line_kind = kind_of(obj)
        if line_kind is None:
            raise JsonlTaskError(f"{where}: neither a math line (field 'question') nor a code line "
                                 f"(fields 'prompt' and 'tests'); fields: {', '.join(sorted(obj)) or 'none'}")
        if kind is not None and line_kind != kind:
            raise JsonlTaskError(f"{where}: a {line_kind} line in a file of {kind} lines (kind of its first line)")
        kind = line_kind
        make = math_problem if kind == "math" else code_problem
        problems.append(make(obj, f"J{lineno:05d}", where))
    return problems


def problem_tasks(cfg: TaskConfig) -> tuple[str, ...]:
    """The Problem.task of the file's problems: the kind of its first line
    (both kinds while the file cannot be read; make_split reports why)."""
    try:
        with open(cfg.path, encoding="utf-8") as f:
            first = next((line for line in f if line.strip()), "")
        kind = kind_of(json.loads(first))
    except (OSError, ValueError, AttributeError, TypeError):
        kind = None
    return (kind,) if kind else ("math", "code")


def make_split(cfg: TaskConfig, seed: int) -> Split:
    if not cfg.path:
        raise JsonlTaskError('task.impl = "jsonl" needs task.path, the JSONL file to load')
    problems = load(cfg.path)
    random.Random(f"jsonl/{seed}").shuffle(problems)
    ev = problems[:cfg.n_eval]
    train = problems[cfg.n_eval:cfg.n_eval + cfg.n_train]
    labeled = problems[cfg.n_eval + cfg.n_train:cfg.n_eval + cfg.n_train + cfg.n_labeled]
    if not ev:
        raise JsonlTaskError(f"{cfg.path}: task.n_eval = {cfg.n_eval} leaves no evaluation problem")
    return Split(labeled=labeled, train=train, eval=ev)


def hint_prompt(problem: Problem) -> str:
    """Math only: the question with its answer as a hint (STaR rationalization).
    Code problems have no single answer to hint, so this raises for them."""
    if problem.task != "math":
        raise ValueError(f"problem {problem.id} of task {problem.task!r} has no answer to give as a hint")
    return f"{problem.prompt.rstrip()} (answer: {problem.reference})\n"


def critic_text(problem: Problem, candidate_text: str, heldout_outputs: list[str | None] | None) -> str:
    """The prompt and the candidate (never the gold answer or the tests)."""
    return problem.prompt + candidate_text.strip()[:4000]
