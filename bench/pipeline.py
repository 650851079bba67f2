"""What the five processes buy: the same self-training work run by the
constellation (``constellation up``: one process per role, the supervisor)
and by one process that calls the same role classes in turn
(``launch/inprocess.py``: the real coordinator over ``InProcessRoleClient``).

    .venv/bin/python bench/pipeline.py                          # one_step, 2 rounds (about 8 min on 2 cores)
    .venv/bin/python bench/pipeline.py --overlap none
    .venv/bin/python bench/pipeline.py --problems 600 --eval-problems 200 --eval-samples 64 --rounds 3   # ~ the default preset

The work: the default preset's model and task, ``--rounds`` rounds of
``--problems`` training problems x ``--k`` samples, verified, scored by the
critic, selected, one trainer round each (``--trainer-epochs`` epochs, no time
budget, so both runs do the same optimizer steps whatever the CPU contention),
then evaluated on ``--eval-problems`` x ``--eval-samples`` and the guard's
validation sample. The base model is the default preset's (built once into the
model cache, then reused by both runs).

Each run is a child process started the same way; both write a run directory
whose events give the figures (runtime/sampler.py ``TimedClient``):
  * wall: run_start -> run_end (the rounds), and the whole command (start-up too);
  * each role's busy seconds, as its replies report them; the generator's busy
    fraction = its busy seconds / (run_end - run_start);
  * the critical path of each round: whom the coordinator waited on, how long.
The constellation/single wall ratio is printed last. In the single process
the roles share one thread and nothing overlaps, whatever ``--overlap``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from constellation.protocol import events as ev  # noqa: E402
from constellation.runtime.store import read_events  # noqa: E402

ROLES = ("generator", "verifier", "critic", "trainer")


def settings(args: argparse.Namespace, run_dir: Path) -> list[str]:
    """--set overrides of the default preset that define the work."""
    return [f"run.rounds={args.rounds}", f"run.seed={args.seed}", 'run.name="pipeline"',
            f"coordinator.problems_per_round={args.problems}", f"coordinator.k={args.k}",
            f'coordinator.overlap="{args.overlap}"', f"task.n_eval={args.eval_problems}",
            f"eval.n_samples={args.eval_samples}", f"eval.ks=[1,{args.eval_samples}]",
            f"eval.selection_ks=[{min(8, args.eval_samples)}]", f"eval.selection_k={min(8, args.eval_samples)}",
            f"trainer.epochs={args.trainer_epochs}", "trainer.max_seconds=0", f'run.runs_dir="{run_dir.parent}"']


def single(run_dir: Path, sets: list[str]) -> None:
    """The child of the single-process run."""
    from constellation.protocol import config
    from launch.inprocess import in_process

    with in_process(config.load("tiny", sets), run_dir) as coordinator:
        coordinator.run()


def run(how: str, run_dir: Path, sets: list[str]) -> float:
    """One run in a child process -> its command's wall seconds."""
    if how == "constellation":
        cmd = [sys.executable, "-m", "launch.cli", "up", "--preset", "tiny", "--run-dir", str(run_dir)]
        for s in sets:
            cmd += ["--set", s]
    else:
        cmd = [sys.executable, __file__, "--single", str(run_dir), *sets]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"the {how} run failed (exit {proc.returncode}); see {run_dir}/logs:\n"
                         f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return seconds


def figures(run_dir: Path, command_seconds: float) -> dict:
    events = read_events(run_dir)
    start = next(e for e in events if isinstance(e, ev.RunStart))
    end = next(e for e in reversed(events) if isinstance(e, ev.RunEnd))
    span = end.time - start.time
    rounds = [e for e in events if isinstance(e, ev.RoundEnd)]
    evals = [e for e in events if isinstance(e, ev.Eval)]
    return {"span": span, "command": command_seconds, "busy": end.busy_seconds,
            "gen_fraction": end.busy_seconds.get("generator", 0.0) / span,
            "rounds": [(e.round, e.seconds, e.waited, e.staleness) for e in rounds],
            "pass": [(e.model, e.pass_at_k) for e in evals]}


def critical_path(waited: dict[str, float]) -> str:
    parts = sorted(waited.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{role} {seconds:.1f} s" for role, seconds in parts if seconds >= 0.05)


def report(args: argparse.Namespace, res: dict[str, dict]) -> None:
    c, s = res["constellation"], res["single"]
    print(f"work: {args.rounds} round(s) of {args.problems} problems x k={args.k}, eval {args.eval_problems} x "
          f"{args.eval_samples} (+ the guard's validation), trainer {args.trainer_epochs} epochs, "
          f"overlap={args.overlap}, seed {args.seed}")
    print(f"{'':34}{'constellation':>15}{'single process':>16}{'ratio':>8}")
    for label, key in (("wall, run_start -> run_end (s)", "span"), ("wall, whole command (s)", "command")):
        print(f"{label:34}{c[key]:15.1f}{s[key]:16.1f}{c[key] / s[key]:8.2f}")
    print(f"{'generator busy fraction':34}{c['gen_fraction']:15.0%}{s['gen_fraction']:16.0%}")
    for role in ROLES:
        print(f"{role + ' busy (s)':34}{c['busy'].get(role, 0.0):15.1f}{s['busy'].get(role, 0.0):16.1f}")
    for how, r in res.items():
        for round_, seconds, waited, staleness in r["rounds"]:
            print(f"{how} round {round_}: {seconds:.1f} s, staleness {staleness}; waited on: "
                  f"{critical_path(waited)}")
    for how, r in res.items():
        print(f"{how} pass@k: " + "; ".join(f"{model} {p}" for model, p in r["pass"]))
    print(f"constellation / single process wall time (run_start -> run_end): {c['span'] / s['span']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--problems", type=int, default=200, help="training problems per round")
    ap.add_argument("--k", type=int, default=8, help="samples per training problem")
    ap.add_argument("--eval-problems", type=int, default=100)
    ap.add_argument("--eval-samples", type=int, default=32)
    ap.add_argument("--trainer-epochs", type=int, default=2)
    ap.add_argument("--overlap", choices=["none", "one_step"], default="one_step")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=["constellation", "single"], help="run one of the two (no ratio)")
    ap.add_argument("--single", help=argparse.SUPPRESS)  # child: the single-process run into this directory
    args, rest = ap.parse_known_args()
    if args.single:
        return single(Path(args.single), rest)
    res = {}
    with tempfile.TemporaryDirectory(prefix="pipeline-") as tmp:
        for how in ("constellation", "single"):
            if args.only in (None, how):
                run_dir = Path(tmp) / how
                res[how] = figures(run_dir, run(how, run_dir, settings(args, run_dir)))
    if len(res) == 2:
        report(args, res)
    else:
        for how, r in res.items():
            print(how, r)


if __name__ == "__main__":
    main()
