"""Write the smollm2 preset's task: arithmetic word problems at four levels of difficulty.

    python scripts/make_word_problems.py [OUT_DIR]    (default data/word-problems)

Writes two task sets, each a train.jsonl and an eval.jsonl, one JSON object per line:
    OUT_DIR/level1/       level 1 only: the smollm2 preset's task (in the base's zone)
    OUT_DIR/levels1-4/    all four levels mixed (below the zone as a whole; the probe
                          shows pass@1 per level)
A line: {"question": "...", "answer": "68", "difficulty": 3}
The "hf" task reads them (task.fields maps question/answer/difficulty) and the
"math" verifier checks the final number. The files are a pure function of
SEED, so re-running this script rewrites them byte for byte; they are small
(a few hundred KB) and committed, so nothing is generated or downloaded at run time.

Levels (what a 135M chat model finds progressively harder, measured by
`constellation probe --preset smollm2 --set task.eval_source=...levels1-4/eval.jsonl`):
    1  a + b, one digit each
    2  a + b, two digits, no carry
    3  a + b, two digits, with a carry
    4  a - b, two digits, with a borrow
One-digit sums repeat across the two files under other wording (there are
only 81 of them); a question is never in both files: eval questions are drawn
first and train questions that repeat one are skipped.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

SEED = 20261206
N_EVAL_PER_LEVEL = 100
N_TRAIN_PER_LEVEL = 500
NAMES = ["Tom", "Mia", "Sam", "Ava", "Leo", "Zoe", "Ben", "Ivy", "Max", "Lily", "Omar", "Nina"]
THINGS = ["apples", "books", "stickers", "marbles", "coins", "pencils", "cards", "shells", "stamps", "cookies"]
ADD = ["{n} has {a} {t}. {p} gets {b} more {t}. How many {t} does {n} have now?",
       "{n} had {a} {t} and found {b} more. How many {t} does {n} have in all?",
       "There are {a} {t} in one box and {b} {t} in another. How many {t} are there altogether?"]
SUB = ["{n} has {a} {t}. {p} gives away {b} of them. How many {t} does {n} have left?",
       "{n} had {a} {t} and lost {b}. How many {t} are left?",
       "A shop had {a} {t} and sold {b}. How many {t} does the shop have now?"]


def operands(level: int, rng: random.Random) -> tuple[int, int]:
    """Two operands of the given level (see the module docstring)."""
    while True:
        if level == 1:
            a, b = rng.randint(1, 9), rng.randint(1, 9)
            return a, b
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        carry = a % 10 + b % 10 >= 10
        if level == 2 and not carry and a + b < 100:
            return a, b
        if level == 3 and carry:
            return a, b
        if level == 4 and a > b and a % 10 < b % 10:
            return a, b


def problem(level: int, rng: random.Random) -> dict:
    a, b = operands(level, rng)
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    template = rng.choice(SUB if level == 4 else ADD)
    question = template.format(n=name, p="She" if name in ("Mia", "Ava", "Zoe", "Ivy", "Lily", "Nina") else "He",
                               a=a, b=b, t=thing)
    return {"question": question, "answer": str(a - b if level == 4 else a + b), "difficulty": level}


def draw(count: int, level: int, rng: random.Random, taken: set[str]) -> list[dict]:
    out: list[dict] = []
    while len(out) < count:
        p = problem(level, rng)
        if p["question"] not in taken:
            taken.add(p["question"])
            out.append(p)
    return out


def write_set(out: Path, levels: tuple[int, ...]) -> None:
    rng, taken = random.Random(SEED), set()
    splits: dict[str, list[dict]] = {"eval": [], "train": []}
    for name, per_level in (("eval", N_EVAL_PER_LEVEL), ("train", N_TRAIN_PER_LEVEL)):
        for level in levels:
            splits[name] += draw(per_level, level, rng, taken)
        rng.shuffle(splits[name])
    out.mkdir(parents=True, exist_ok=True)
    for name, records in splits.items():
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        print(f"{out / name}.jsonl: {len(records)} problems")


def main(out_dir: str = "data/word-problems") -> None:
    write_set(Path(out_dir) / "level1", (1,))
    write_set(Path(out_dir) / "levels1-4", (1, 2, 3, 4))


if __name__ == "__main__":
    main(*sys.argv[1:2])
