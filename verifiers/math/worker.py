"""The child process of ``MathChecker``: reads requests on stdin, writes verdicts on stdout.

Protocol: one JSON object per line each way. The child first writes
``{"ready": true}`` once sympy is imported and warm; then, for each request
``{"gold": str, "pred": str}``, exactly one line with the fields of
``equivalence.judge`` (or of the judge named on the command line,
``python -m verifiers.math.worker module:function``, e.g. the math-verify
judge of verifiers/math_verify.py). The parent owns the deadline and kills this process
when a request runs too long; the child never needs a timer of its own.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time

import msgspec

MEMORY_LIMIT = 2 << 30  # bytes of address space: a runaway sympy computation dies with MemoryError


def _exit_with_parent(parent: int) -> None:
    """End this worker when its parent is gone, even in the middle of a long sympy
    call (stdin EOF is only seen between requests). PR_SET_PDEATHSIG is not used:
    it fires when the parent *thread* that started us ends, and MathChecker
    starts replacement workers from short-lived pool threads."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def main(judge_path: str = "verifiers.math.equivalence:judge") -> None:
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    try:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    except (ValueError, OSError):  # a lower hard limit is already in place
        pass
    sys.set_int_max_str_digits(0)  # our own size guards bound every printed number
    import importlib

    module, _, name = judge_path.partition(":")
    judge = getattr(importlib.import_module(module), name)

    judge("\\frac{1}{2}", "x = 0.5")  # warm the caches: the first sympy call is the slowest
    out = sys.stdout.buffer
    out.write(msgspec.json.encode({"ready": True}) + b"\n")
    out.flush()
    decoder = msgspec.json.Decoder(dict[str, str])
    for line in sys.stdin.buffer:
        try:
            req = decoder.decode(line)
            reply = judge(req["gold"], req["pred"])
        except (msgspec.DecodeError, KeyError) as e:
            reply = {"verdict": "parse_error", "equal": False, "extracted": None, "error": f"bad request: {e}"}
        except MemoryError:
            reply = {"verdict": "parse_error", "equal": False, "extracted": None, "error": "out of memory"}
        except Exception as e:  # a sympy bug on one answer must not end the worker
            reply = {"verdict": "parse_error", "equal": False, "extracted": None,
                     "error": f"{type(e).__name__}: {str(e)[:200]}"}
        out.write(msgspec.json.encode(reply) + b"\n")
        out.flush()


if __name__ == "__main__":
    main(*sys.argv[1:2])
