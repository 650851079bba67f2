"""Is the warm-started base model in the zone of proximal development, and does
one STaR round help? The real constellation loop, in one process, no sockets
(launch/inprocess.py: the coordinator and the configured role classes):

    make_split -> ensure_base_model (warm start or cache) -> eval base
    -> STaR rounds (sample k per training problem, select, train, serve) -> eval each

and prints pass@1/8/n of the base and of each round (held-out correct, n
samples per eval problem), pass@1 per difficulty, and the generator's and
verifier's throughput.

    .venv/bin/python bench/zpd_probe.py                     # base + one STaR round
    .venv/bin/python bench/zpd_probe.py --rounds 0          # only the base
    .venv/bin/python bench/zpd_probe.py --set model.warm_start_seconds=120 --set task.n_visible=4
    .venv/bin/python bench/zpd_probe.py --compare-generate  # own decode loop vs model.generate

Bench defaults (before your --set overrides): 32 eval samples, 150 training
problems x 8 candidates, a 60 s training budget. A single STaR round moves
pass@8 by a few points either way: compare variants over several seeds
(--set run.seed=N) before believing such a difference.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from constellation.protocol import events as ev  # noqa: E402
from constellation.protocol.config import Config, apply_overrides, from_dict  # noqa: E402
from constellation.runtime.store import load_split, read_events, read_pools  # noqa: E402

BENCH_DEFAULTS = ["eval.n_samples=32", "eval.ks=[1,2,4,8,16,32]", "coordinator.problems_per_round=150",
                  "coordinator.k=8", "trainer.max_seconds=60.0"]


def per_difficulty(run_dir: Path, round: int) -> str:
    """Held-out pass@1 per problem difficulty of one evaluation, from run.sqlite."""
    db = sqlite3.connect(f"file:{run_dir / 'run.sqlite'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    difficulty = dict(db.execute("SELECT id, difficulty FROM problems").fetchall())
    by: dict[int, list[float]] = defaultdict(list)
    for pid, pool in read_pools(db, round, "eval").items():
        by[difficulty[pid]].append(sum(s.heldout_correct for s in pool) / len(pool))
    db.close()
    return "  ".join(f"d{d}={sum(v) / len(v):.2f}" for d, v in sorted(by.items()))


def compare_generate(cfg: Config, base_path: Path, problems) -> None:
    from constellation.models.lm import load_model, sample

    model, tokenizer = load_model(base_path)
    prompts = [p.prompt for p in problems[:16]]
    for p_per_call, k in ((8, 8), (1, 64)):
        times = {}
        for method in ("fast", "generate"):
            t0 = time.monotonic()
            sample(model, tokenizer, prompts, k=k, max_new_tokens=cfg.sampling.max_new_tokens, seed=0,
                   batch_size=p_per_call * k, method=method)
            times[method] = time.monotonic() - t0
        n = len(prompts) * k
        print(f"[compare] {p_per_call} prompts x k={k} per call: fast {n / times['fast']:.0f} cand/s, "
              f"generate {n / times['generate']:.0f} cand/s -> fast is {times['generate'] / times['fast']:.1f}x",
              flush=True)


def report(run_dir: Path, seconds: float, stats: dict[str, dict[str, float]]) -> None:
    for e in read_events(run_dir):
        if isinstance(e, ev.Eval):
            ks = {k: v for k, v in e.pass_at_k.items() if k in ("1", "8", str(e.n_samples))}
            print(f"[{e.model}] " + "  ".join(f"pass@{k}={v:.3f}" for k, v in ks.items())
                  + f" | pass@1 by difficulty: {per_difficulty(run_dir, e.round)}", flush=True)
        elif isinstance(e, ev.Zpd):
            print(f"[base] {e.verdict} (zone {e.low:.0%}-{e.high:.0%})", flush=True)
        elif isinstance(e, ev.RoundEnd):
            print(f"[round {e.round}] {e.n_visible_pass} visible-pass of {e.n_candidates} candidates, "
                  f"{e.n_train_examples} training examples, precision {e.train_precision}", flush=True)
    for role in ("generator", "verifier"):
        print(f"[{role}] {stats[role].get('done', 0):.0f} candidates at {stats[role].get('per_second', 0):.0f}/s "
              f"while busy", flush=True)
    print(f"total {seconds:.0f}s", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="config override")
    ap.add_argument("--rounds", type=int, default=1, help="STaR rounds after the base evaluation (0: the base only)")
    ap.add_argument("--compare-generate", action="store_true", help="time the fast loop against model.generate")
    args = ap.parse_args(argv)

    from launch.inprocess import in_process

    cfg = from_dict(apply_overrides({}, [*BENCH_DEFAULTS, f"run.rounds={args.rounds}", *args.set]))

    def progress(frac: float, msg: str, last=[0.0]) -> None:  # noqa: B006 (a counter kept between calls)
        if frac - last[0] >= 0.1 or frac >= 1.0:
            last[0] = frac
            print(f"  {frac:4.0%} {msg}", flush=True)

    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        with in_process(cfg, run_dir, progress=progress) as coordinator:
            if args.compare_generate:
                compare_generate(cfg, Path((run_dir / "base_model.txt").read_text()), load_split(run_dir).eval)
            coordinator.run()
            stats = {role: coordinator.client.workers[role].stats() for role in ("generator", "verifier")}
        report(run_dir, time.monotonic() - t0, stats)


if __name__ == "__main__":
    main()
