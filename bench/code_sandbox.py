"""The cost of the code sandbox: one sandboxed child per candidate vs exec() in this process.

    python bench/code_sandbox.py [--n 60]

Runs the reference solutions of examples/code.jsonl (all pass) and a wrong
completion for each (all fail), both ways, and prints the median seconds per
candidate and the ratios. The sandbox runs jailed (namespaces, where
available) and unjailed (``Limits(jail=False)``), interleaved, so the jail's
own cost shows under the same load. The in-process run is what the sandbox costs over
no isolation at all (and is never what the verifier does), and the hostile
cases show how long a bounded failure takes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from roles.verifier_code import program_text  # noqa: E402
from verifiers.code import Limits, run_tests  # noqa: E402
from verifiers.code_jail import jail_available  # noqa: E402
from constellation.tasks.jsonl import load  # noqa: E402


def in_process(program: str, tests: list[str]) -> bool:
    namespace: dict = {}
    try:
        exec(program, namespace)  # bench only: our own example solutions
        for t in tests:
            exec(t, namespace)
        return True
    except Exception:
        return False


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=60, help="candidates per way")
    args = ap.parse_args()
    problems = load(ROOT / "examples" / "code.jsonl")
    cases = [(program_text(p, text), p.data["tests"], p.data["entry_point"])
             for p in problems for text in (p.reference, "    return None\n")]
    cases = (cases * (args.n // len(cases) + 1))[:args.n]
    limits, unjailed_limits = Limits(), Limits(jail=False)
    sandboxed, unjailed, direct = [], [], []
    for program, tests, entry in cases:
        t0 = time.perf_counter()
        run_tests(program, tests, limits, entry)
        sandboxed.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_tests(program, tests, unjailed_limits, entry)
        unjailed.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        in_process(program, tests)
        direct.append(time.perf_counter() - t0)
    ms, mu, md = statistics.median(sandboxed), statistics.median(unjailed), statistics.median(direct)
    print(f"sandboxed child (jail: {jail_available()}): median {ms * 1e3:.1f} ms/candidate "
          f"({1 / ms:.1f} candidates/s), n={len(cases)}")
    print(f"sandboxed child without a jail: median {mu * 1e3:.1f} ms/candidate; ratio jailed/unjailed: {ms / mu:.2f}")
    print(f"exec in process: median {md * 1e3:.3f} ms/candidate")
    print(f"ratio sandboxed/in-process: {ms / md:.0f}")
    hostile = {"infinite loop": "def f():\n    while True:\n        pass\n",
               "fork bomb": "import os\ndef f():\n    while True:\n        os.fork()\n",
               "memory hog": "def f():\n    a = []\n    while True:\n        a.append(bytearray(1 << 20))\n",
               "os._exit": "import os\ndef f():\n    os._exit(3)\n"}
    for name, program in hostile.items():
        t0 = time.perf_counter()
        v = run_tests(program, ["f()"], Limits(cpu_seconds=1, wall_seconds=2.0))
        print(f"{name}: {v.status} in {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
