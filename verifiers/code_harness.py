"""Runs inside the sandboxed child of ``verifiers.code`` (``python -I -S -B``): stdlib only.

Reads ``job.json`` from its working directory ({"program", "tests", "entry_point"}),
executes the program once in a fresh namespace, then each test in that
namespace, and writes one JSON line per test to the result fd (argv[1]) the
moment the test finishes: ``[index, status, detail]`` with status
pass | fail | error | memory, or ``[-1, status, detail]`` when the program
itself did not load. The parent reads these lines, so a child that dies in
test 3 still reports tests 0..2.

The program's own stdout/stderr go to a sink that keeps a short prefix and
drops the rest (the fds 1 and 2 are /dev/null), so printing floods cost
CPU time only.
"""

import io
import json
import os
import sys

DETAIL_CHARS = 200


class _Sink(io.TextIOBase):
    """A text stream that keeps its first 1,000 characters and discards the rest."""

    def __init__(self):
        self.kept = []
        self.n = 0

    def writable(self):
        return True

    def write(self, s):
        if self.n < 1000:
            self.kept.append(s[: 1000 - self.n])
        self.n += len(s)
        return len(s)


def _describe(e):
    text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    return text[:DETAIL_CHARS]


def _emit(fd, record):
    os.write(fd, (json.dumps(record) + "\n").encode())


def _run(code, namespace):
    """-> (status, detail) of executing one piece of source."""
    try:
        exec(compile(code, "<candidate>", "exec"), namespace)
        return "pass", ""
    except AssertionError as e:
        return "fail", _describe(e) if str(e) else "assertion failed"
    except MemoryError as e:
        return "memory", _describe(e)
    except BaseException as e:  # SystemExit and KeyboardInterrupt too: the test failed, the harness goes on
        return "error", _describe(e)


def main():
    fd = int(sys.argv[1])
    with open("job.json", encoding="utf-8") as f:
        job = json.load(f)
    sys.stdout = sys.stderr = _Sink()
    namespace = {"__name__": "__candidate__"}
    status, detail = _run(job["program"], namespace)
    if status != "pass":
        _emit(fd, [-1, status, detail])
        return
    entry = job.get("entry_point")
    for i, test in enumerate(job["tests"]):
        if entry and "def check(" in test:  # HumanEval style: a check(candidate) function
            test = f"{test}\ncheck({entry})"
        status, detail = _run(test, namespace)
        _emit(fd, [i, status, detail])


if __name__ == "__main__":
    main()
