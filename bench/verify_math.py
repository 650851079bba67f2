"""Our math verifier against math-verify, side by side on the same cases.

    python bench/verify_math.py                 # all cases (about 3 minutes on one core)
    python bench/verify_math.py --gsm8k 500     # fewer GSM8K solutions

Cases:
- bench/data/math_heldout.jsonl: 287 hand-checked (gold, prediction, equal) cases
  across the format categories of issue 5, 40% non-equivalent;
- bench/data/math_adversarial.jsonl: 86 non-equivalent or hostile cases (four of them
  megabyte inputs built here), where any "equal" is a wrong accept;
- bench/data/math_classes.jsonl: 42 hand-labelled cases of issue 11's classes (matrix
  orientation, lists of choices, unbalanced brackets, sets of answers, other forms);
- bench/data/math_hostile.jsonl: a hostile file, run through ``constellation verify``'s
  reader (ours only): every line must get a verdict, each within the 1 s deadline;
- the 5,276 labeled GSM8K model solutions of /work/shared/data/gsm8k (if present).

Both verifiers run in a separate process with a deadline: ours through
MathChecker (1 s); math-verify with its own 1 s parse and verify timeouts
(signal.alarm, in its child's main thread) and a hard kill at 10 s, so a case
that hangs it is counted as a timeout, not waited for. "Warm" is a long-lived
worker; "cold" is the first check of a freshly started worker process (its
start-up, the sympy import, excluded and reported apart), on every 6th case.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from verifiers.math import MathChecker  # noqa: E402

DATA = ROOT / "bench" / "data"
GSM8K = Path("/work/shared/data/gsm8k")
MEGA = {  # hostile megabyte predictions, built here rather than stored
    "MEGA_DIGITS": lambda: "9" * 1_000_000,
    "MEGA_BRACES": lambda: "\\boxed{" + "{" * 500_000 + "1" + "}" * 500_000 + "}",
    "MEGA_JUNK": lambda: bytes(range(256)).decode("latin-1") * 4096,
    "MEGA_BOXED": lambda: "\\boxed{" * 150_000 + "9",
}
HARD_KILL = 10.0


def load_cases(name: str) -> list[dict]:
    rows = [json.loads(line) for line in (DATA / name).open(encoding="utf-8")]
    for row in rows:
        if row["pred"] in MEGA:
            row["pred"] = MEGA[row["pred"]]()
    return rows


def load_gsm8k(limit: int) -> list[dict]:
    if not (GSM8K / "test.jsonl").exists():
        return []
    gold = {}
    for line in (GSM8K / "test.jsonl").open():
        row = json.loads(line)
        gold[row["question"]] = row["answer"].split("####")[-1].strip()
    cases = []
    for line in (GSM8K / "example_model_solutions.jsonl").open():
        row = json.loads(line)
        for key, value in row.items():
            if isinstance(value, dict):
                cases.append({"category": "gsm8k", "gold": gold[row["question"]], "pred": value["solution"],
                              "equal": value["is_correct"]})
    return cases[:limit]


# -- math-verify in a child process -------------------------------------------------

def _math_verify_loop(conn) -> None:
    import logging

    from math_verify import parse, verify

    logging.disable(logging.CRITICAL)  # it logs every timeout with the whole (megabyte) input

    conn.send("ready")
    while True:
        gold, pred = conn.recv()
        t0 = time.perf_counter()
        try:
            wrapped = gold if ("$" in gold or "\\boxed" in gold) else f"${gold}$"
            equal = bool(verify(parse(wrapped, parsing_timeout=1), parse(pred, parsing_timeout=1), timeout_seconds=1))
        except Exception:  # its errors are a non-verdict, counted as not equal
            equal = False
        conn.send((equal, time.perf_counter() - t0))


class MathVerifyChild:
    def __init__(self) -> None:
        self.ctx = mp.get_context("spawn")
        self.start()

    def start(self) -> None:
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_math_verify_loop, args=(child,), daemon=True)
        t0 = time.perf_counter()
        self.proc.start()
        assert self.conn.recv() == "ready"
        self.startup = time.perf_counter() - t0

    def check(self, gold: str, pred: str) -> tuple[str, float]:
        """("equal" | "unequal" | "timeout", seconds)."""
        t0 = time.perf_counter()
        self.conn.send((gold, pred))
        if not self.conn.poll(HARD_KILL):
            self.close()
            self.start()
            return "timeout", time.perf_counter() - t0
        equal, _ = self.conn.recv()
        return ("equal" if equal else "unequal"), time.perf_counter() - t0

    def close(self) -> None:
        self.proc.kill()
        self.proc.join()


# -- runs ------------------------------------------------------------------------------

def run_ours(cases: list[dict]) -> list[tuple[str, float]]:
    with MathChecker(workers=1, timeout=1.0) as checker:
        checker.warm_up()
        out = []
        for case in cases:
            v = checker.check(case["gold"], case["pred"])
            out.append(("equal" if v.equal else ("timeout" if v.verdict == "timeout" else "unequal"), v.seconds))
        return out


def run_theirs(cases: list[dict]) -> list[tuple[str, float]]:
    child = MathVerifyChild()
    try:
        return [child.check(c["gold"], c["pred"]) for c in cases]
    finally:
        child.close()


def cold_ours(cases: list[dict]) -> tuple[list[float], list[float]]:
    seconds, startups = [], []
    for case in cases:
        t0 = time.perf_counter()
        with MathChecker(workers=1, timeout=1.0) as checker:
            checker.warm_up()
            startups.append(time.perf_counter() - t0)
            seconds.append(checker.check(case["gold"], case["pred"]).seconds)
    return seconds, startups


def cold_theirs(cases: list[dict]) -> tuple[list[float], list[float]]:
    seconds, startups = [], []
    for case in cases:
        child = MathVerifyChild()
        startups.append(child.startup)
        seconds.append(child.check(case["gold"], case["pred"])[1])
        child.close()
    return seconds, startups


def agreement(cases: list[dict], results: list[tuple[str, float]]) -> float:
    return sum((r == "equal") == c["equal"] for c, (r, _) in zip(cases, results)) / max(1, len(cases))


def hostile_file() -> None:
    """Each line of math_hostile.jsonl through verify's reader and our checker: lines, slowest, timeouts."""
    from launch.verify import parse_line

    with (DATA / "math_hostile.jsonl").open(encoding="utf-8", errors="replace") as f:
        parsed = [parse_line(line) for line in f if line.strip()]
    pairs = [p for p in parsed if isinstance(p, tuple)]
    with MathChecker(workers=1, timeout=1.0) as checker:
        checker.warm_up()
        verdicts = [checker.check(gold, pred) for gold, pred in pairs]
    print(f"\nhostile file: {len(parsed)} lines ({len(parsed) - len(pairs)} malformed), every line decided; "
          f"slowest {max(v.seconds for v in verdicts):.4f} s, timeouts {sum(v.verdict == 'timeout' for v in verdicts)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gsm8k", type=int, default=10_000, help="at most this many labeled GSM8K solutions")
    ap.add_argument("--cold-every", type=int, default=6, help="cold-start timing on every n-th held-out/adversarial case")
    args = ap.parse_args()

    heldout, adversarial, gsm8k = load_cases("math_heldout.jsonl"), load_cases("math_adversarial.jsonl"), load_gsm8k(args.gsm8k)
    sets = {"held-out": heldout, "adversarial": adversarial, "gsm8k": gsm8k, "classes": load_cases("math_classes.jsonl")}
    ours = {name: run_ours(cases) for name, cases in sets.items()}
    theirs = {name: run_theirs(cases) for name, cases in sets.items()}

    def row(label: str, a: str, b: str, ratio: str = "") -> None:
        print(f"{label:<46} {a:>12} {b:>12} {ratio:>8}")

    print(f"held-out {len(heldout)} cases ({sum(not c['equal'] for c in heldout)} non-equivalent), "
          f"adversarial {len(adversarial)}, GSM8K labeled {len(gsm8k)}\n")
    row("", "ours", "math-verify", "ratio")
    for name in ("held-out", "gsm8k", "classes"):
        if sets[name]:
            row(f"{name}: agreement with labels", f"{agreement(sets[name], ours[name]):.1%}",
                f"{agreement(sets[name], theirs[name]):.1%}")
    wrong = {k: sum(r == "equal" for r, _ in v["adversarial"]) for k, v in (("ours", ours), ("theirs", theirs))}
    row("adversarial: wrong accepts", str(wrong["ours"]), str(wrong["theirs"]))
    timeouts = {k: sum(r == "timeout" for s in v.values() for r, _ in s) for k, v in (("ours", ours), ("theirs", theirs))}
    row("timeouts (all cases)", str(timeouts["ours"]), str(timeouts["theirs"]))
    all_ours = [s for v in ours.values() for _, s in v]
    all_theirs = [s for v in theirs.values() for _, s in v]
    for label, fn in (("median", statistics.median), ("max", max)):
        a, b = fn(all_ours), fn(all_theirs)
        row(f"warm worker: {label} seconds per case", f"{a:.4f}", f"{b:.4f}", f"{b / a:.1f}x")
    sample = (heldout + adversarial)[::args.cold_every]
    (cold_a, start_a), (cold_b, start_b) = cold_ours(sample), cold_theirs(sample)
    for label, fn in (("median", statistics.median), ("max", max)):
        a, b = fn(cold_a), fn(cold_b)
        row(f"cold worker ({len(sample)} cases): {label} seconds", f"{a:.4f}", f"{b:.4f}", f"{b / a:.1f}x")
    a, b = statistics.median(start_a), statistics.median(start_b)
    row("worker start-up, median seconds", f"{a:.3f}", f"{b:.3f}", f"{b / a:.1f}x")
    hostile_file()
    print("\ndisagreements with the hand labels (held-out, classes):")
    for name in ("held-out", "classes"):
        for case, (r_ours, _), (r_theirs, _) in zip(sets[name], ours[name], theirs[name]):
            marks = [who for who, r in (("ours", r_ours), ("math-verify", r_theirs)) if (r == "equal") != case["equal"]]
            if marks:
                print(f"  {case['id']} {case['category']:<14} label={case['equal']!s:<5} wrong: {', '.join(marks):<18} "
                      f"gold={case['gold'][:40]!r} pred={case['pred'][:50]!r}")
    print("adversarial wrong accepts:")
    for who, results in (("ours", ours), ("math-verify", theirs)):
        for case, (r, _) in zip(adversarial, results["adversarial"]):
            if r == "equal":
                print(f"  {who}: {case['id']} {case['category']} gold={case['gold'][:40]!r} pred={case['pred'][:50]!r}")


if __name__ == "__main__":
    main()
