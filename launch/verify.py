"""``constellation verify --verifier math FILE.jsonl``: verify a file of answers.

Each input line is ``{"gold": str, "pred": str}``; each output line (stdout, in
input order) is ``{"verdict", "equal", "extracted", "seconds"}``, plus ``"error"``
when there is one. A malformed line (not JSON, not an object, a missing or
non-string field) gets ``{"verdict": "parse_error", "error": ...}`` and the
rest go on. A summary (count per verdict, median / p99 / max seconds) goes to
stderr at the end. Exit code 0 when the file was read, 2 when it could not be.

sympy is imported only by the worker processes, never by this module.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any, Iterator

CHUNK = 256  # lines verified per batch: output streams and memory stays bounded


def parse_line(line: str) -> tuple[str, str] | str:
    """(gold, pred) of one input line, or the reason it is malformed."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        return f"not JSON: {e.msg} at column {e.colno}"
    except ValueError as e:  # a number of more than 4,300 digits
        return f"not JSON: {str(e)[:80]}"
    except RecursionError:
        return "not JSON: nested too deeply"
    if not isinstance(obj, dict):
        return f"not a JSON object but a {type(obj).__name__}"
    for key in ("gold", "pred"):
        if key not in obj:
            return f"missing field {key!r}"
        if not isinstance(obj[key], str):
            return f"field {key!r} is a {type(obj[key]).__name__}, not a string"
    return obj["gold"], obj["pred"]


def _chunks(lines: Iterator[str]) -> Iterator[list[tuple[int, str]]]:
    """Batches of (line number, line), blank lines left out (a trailing newline is not a record)."""
    chunk: list[tuple[int, str]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        chunk.append((number, line))
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _json_line(row: dict[str, Any]) -> str:
    """One output line; \\u escapes when the text cannot be written as UTF-8 (a lone surrogate)."""
    text = json.dumps(row, ensure_ascii=False)
    try:
        text.encode(sys.stdout.encoding or "utf-8")
        return text
    except (UnicodeEncodeError, LookupError):
        return json.dumps(row)


def summary(rows: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["verdict"]] = counts.get(row["verdict"], 0) + 1
    seconds = sorted(row["seconds"] for row in rows)
    if not seconds:
        return "0 lines"
    p99 = seconds[min(len(seconds) - 1, int(0.99 * len(seconds)))]
    parts = ", ".join(f"{k} {n}" for k, n in sorted(counts.items()))
    return (f"{len(rows)} lines: {parts}; seconds median {statistics.median(seconds):.4f}, "
            f"p99 {p99:.4f}, max {seconds[-1]:.4f}")


def run(file: str, jobs: int = 1, timeout: float = 1.0) -> int:
    """Verify ``file`` ('-' = stdin) with ``jobs`` workers and ``timeout`` seconds per answer; the exit code."""
    from verifiers.math import MathChecker, MathCheckerError

    if jobs < 1 or not timeout > 0:
        print(f"error: --jobs must be >= 1 and --timeout > 0, got {jobs} and {timeout}", file=sys.stderr)
        return 2
    try:
        stream = sys.stdin if file == "-" else Path(file).open(encoding="utf-8", errors="replace")
    except OSError as e:
        print(f"error: cannot read {file}: {e}", file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = []
    try:
        with stream, MathChecker(workers=jobs, timeout=timeout) as checker:
            for chunk in _chunks(stream):
                parsed = [(number, parse_line(line)) for number, line in chunk]
                pairs = [p for _, p in parsed if isinstance(p, tuple)]
                verdicts = iter(checker.check_many(pairs, jobs=jobs))
                for number, item in parsed:
                    if isinstance(item, str):
                        row = {"verdict": "parse_error", "equal": False, "extracted": None, "seconds": 0.0,
                               "error": f"line {number}: {item}"}
                    else:
                        v = next(verdicts)
                        row = {"verdict": v.verdict, "equal": v.equal, "extracted": v.extracted,
                               "seconds": round(v.seconds, 6)}
                        if v.error:
                            row["error"] = v.error
                    rows.append(row)
                    print(_json_line(row))
                sys.stdout.flush()
    except MathCheckerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary(rows), file=sys.stderr)
    return 0
