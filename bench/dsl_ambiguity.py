"""Task-level ambiguity of the DSL per visible mode and n_visible, with no model.

For each setting, PROBLEMS problems (depths 1-3, one Random per problem index,
so the modes start from the same programs where they can) and the share whose
visible examples some other program of the same depth fits while differing on
held-out inputs (constellation.tasks.dsl.open_alternative, a lower bound).

    python bench/dsl_ambiguity.py [--problems 150] [--n-visible 1 2 3]
"""

from __future__ import annotations

import argparse
import random

from constellation.tasks.dsl import VISIBLE_MODES, make_problem, open_alternative


def ambiguous_share(mode: str, n_visible: int, n_problems: int) -> float:
    problems = [make_problem(random.Random(f"bench-ambiguity/{i}"), f"P{i}", 1 + i % 3, n_visible, 6, mode)
                for i in range(n_problems)]
    problems = [p for p in problems if p is not None]
    return sum(open_alternative(p) is not None for p in problems) / len(problems)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=150)
    ap.add_argument("--n-visible", type=int, nargs="+", default=[1, 2, 3])
    args = ap.parse_args()
    print("| n_visible | " + " | ".join(VISIBLE_MODES) + " |")
    print("|---|" + "---|" * len(VISIBLE_MODES))
    for n_visible in args.n_visible:
        shares = [ambiguous_share(mode, n_visible, args.problems) for mode in VISIBLE_MODES]
        print(f"| {n_visible} | " + " | ".join(f"{100 * s:.0f}%" for s in shares) + " |", flush=True)


if __name__ == "__main__":
    main()
