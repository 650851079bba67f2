"""DSL verifier throughput: candidates verified per second, in one process.

    python bench/verifier_throughput.py [--problems 200] [--k 64]

Candidates are what a generator produces: for each problem, k texts drawn
from its reference program, one-edit mutants of it, other problems'
programs and junk. Two workloads are timed side by side, alternating:
all-distinct texts (the parse cache never hits) and the same texts repeated
as in a round where samples collide (the cache hits). Prints candidates/s of
each and their ratio.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from constellation.protocol.config import TaskConfig
from constellation.protocol.messages import Candidate
from verifiers import dsl
from constellation.tasks.dsl import make_split


def _candidates(problems, k: int, rng: random.Random, distinct: bool) -> list[tuple]:
    refs = [p.reference for p in problems]
    work = []
    for p in problems:
        for i in range(k):
            r = rng.random()
            text = p.reference if r < 0.4 else rng.choice(refs) if r < 0.8 else p.reference[:rng.randrange(1, 12)]
            if distinct:  # a distinct but equivalent-shaped text defeats the cache
                text = f'cat({text},"{i}")' if r < 0.8 else text + str(i)
            work.append((p, Candidate(id=f"{p.id}/{i}", problem_id=p.id, text=text, logprob=0.0, adapter_version=0)))
    return work


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=200)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    split = make_split(TaskConfig(n_labeled=10, n_train=args.problems, n_eval=10), seed=0)
    rng = random.Random(0)
    rates: dict[str, list[float]] = {"distinct": [], "repeated": []}
    for rep in range(args.repeats):
        for kind in rates:
            work = _candidates(split.train, args.k, rng, distinct=kind == "distinct")
            t0 = time.perf_counter()
            statuses = [dsl.verify(p, c).status for p, c in work]
            rates[kind].append(len(work) / (time.perf_counter() - t0))
    print(f"{args.problems} problems x {args.k} candidates, 3 visible + 6 held-out inputs each")
    for kind, r in rates.items():
        print(f"{kind:>9} texts: {statistics.median(r):,.0f} candidates/s (median of {args.repeats})")
    print(f"ratio repeated/distinct: {statistics.median(rates['repeated']) / statistics.median(rates['distinct']):.2f}")
    print(f"last workload statuses: { {s: statuses.count(s) for s in set(statuses)} }")


if __name__ == "__main__":
    main()
