"""Kill soak: kill -9 a random role at a random moment, N times, and check
each run ends exactly as an uninterrupted one.

    python bench/kill_soak.py --n 20 [--preset smoke] [--seed 0] [--set KEY=VALUE ...]

First one uninterrupted reference run, then N runs of the same config. In each,
once every role is ready, the bench waits until the run has recorded a random
share (up to 90%) of the reference's candidates, then a random 0-3 s more (so
some kills land in training, when no candidate flows), and sends SIGKILL to a
random role (coordinator, generator, verifier, critic or trainer; pids from
status.json). The moment is counted in work, not wall time, so the kill lands
mid-run whatever the machine's load. Each run must then:
  * exit 0 with a run_end event;
  * have exactly the reference's candidate count per (phase, round), each
    candidate with exactly one verdict (no duplicates, none missing);
  * pass ``PRAGMA integrity_check``;
  * report the reference's pass@k for every evaluation and the reference's
    critic metrics for every round (the critic's ``seconds`` left out).
The trainer is budgeted in epochs (trainer.max_seconds = 0), so runs are
deterministic. Prints one line per run and a summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from constellation.protocol import events as ev  # noqa: E402
from constellation.runtime.store import read_events  # noqa: E402

ROLES = ("coordinator", "generator", "verifier", "critic", "trainer")


def start(preset: str, runs: Path, cache: str, sets: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "launch.cli", "up", "--preset", preset, "--set", f'run.runs_dir="{runs}"',
           "--set", "trainer.max_seconds=0"]
    for s in ([f'model.cache_dir="{cache}"'] if cache else []) + sets:
        cmd += ["--set", s]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_all_ready(runs: Path, proc: subprocess.Popen, timeout: float = 900) -> tuple[Path, dict[str, int]]:
    """-> (run dir, role -> pid) once status.json shows every role past starting."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for run_dir in runs.glob("*/status.json"):
            try:
                roles = json.loads(run_dir.read_text())["roles"]
            except (OSError, ValueError, KeyError):
                continue
            if all(r["state"] not in ("starting",) and r["pid"] for r in roles.values()):
                return run_dir.parent, {name: r["pid"] for name, r in roles.items()}
        time.sleep(0.2)
    raise RuntimeError(f"the run in {runs} never had every role ready (exit {proc.poll()})")


def wait_for_candidates(run_dir: Path, proc: subprocess.Popen, n: int) -> None:
    """Until the run has recorded at least n candidates (or has ended)."""
    while proc.poll() is None:
        try:
            db = sqlite3.connect(f"file:{run_dir / 'run.sqlite'}?mode=ro", uri=True, timeout=5)
            try:
                if db.execute("SELECT COUNT(*) FROM candidates").fetchone()[0] >= n:
                    return
            finally:
                db.close()
        except sqlite3.OperationalError:  # not created yet, or busy
            pass
        time.sleep(0.1)


def outcome(run_dir: Path) -> dict:
    """What must equal the reference: counts, pass@k, critic metrics; and the checks of one run."""
    db = sqlite3.connect(run_dir / "run.sqlite")
    counts = dict(db.execute("SELECT phase || '/' || round, COUNT(*) FROM candidates GROUP BY phase, round"))
    verdicts = db.execute("SELECT COUNT(*), COUNT(DISTINCT candidate_id) FROM verdicts").fetchone()
    missing = db.execute("SELECT COUNT(*) FROM candidates c LEFT JOIN verdicts v ON v.candidate_id = c.id "
                         "WHERE v.candidate_id IS NULL").fetchone()[0]
    integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    db.close()
    events = read_events(run_dir)
    pass_at_k = {e.round: e.pass_at_k for e in events if isinstance(e, ev.Eval)}
    critic = {e.round: {k: v for k, v in e.metrics.items() if k != "seconds"}
              for e in events if isinstance(e, ev.Critic)}
    ends = [e for e in events if isinstance(e, ev.RunEnd)]
    return {"counts": counts, "pass_at_k": pass_at_k, "critic": critic,
            "checks": {"run_end": len(ends) == 1 and ends[0].ok, "integrity": integrity == "ok",
                       "one_verdict_each": verdicts[0] == verdicts[1] and missing == 0},
            "restarts": sum(isinstance(e, ev.RoleRestart) for e in events)}


def one_run(args, work: Path, i: int, reference: dict | None, rng: random.Random) -> dict:
    runs = work / f"run-{i}"
    t0 = time.monotonic()
    proc = start(args.preset, runs, args.cache, args.set)
    run_dir, pids = wait_all_ready(runs, proc)
    ready_at = time.monotonic()
    victim, delay = None, 0.0
    if reference is not None:
        victim, share, extra = rng.choice(ROLES), rng.uniform(0.0, 0.9), rng.uniform(0.0, 3.0)
        wait_for_candidates(run_dir, proc, int(share * sum(reference["counts"].values())))
        time.sleep(extra)
        delay = time.monotonic() - ready_at
        pid = json.loads((run_dir / "status.json").read_text())["roles"][victim]["pid"]
        try:
            os.kill(pid, signal.SIGKILL)
            victim = f"{victim} at {share:.0%} of the candidates + {extra:.1f}s"
        except ProcessLookupError:
            victim = f"{victim} (already gone)"
    out, _ = proc.communicate(timeout=1800)
    result = outcome(run_dir)
    result.update(code=proc.returncode, victim=victim, delay=delay, seconds=time.monotonic() - t0,
                  run_seconds=time.monotonic() - ready_at, tail=out[-2000:])
    return result


def compare(result: dict, reference: dict) -> list[str]:
    """-> what differs from the reference (empty: an exact run)."""
    bad = [name for name, ok in result["checks"].items() if not ok]
    bad += [] if result["code"] == 0 else [f"exit {result['code']}"]
    bad += [key for key in ("counts", "pass_at_k", "critic") if result[key] != reference[key]]
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20, help="runs with one kill each")
    ap.add_argument("--preset", default="smoke")
    ap.add_argument("--seed", type=int, default=0, help="seed of the victims and the moments")
    ap.add_argument("--set", action="append", default=[], help="a config override, as for constellation up")
    ap.add_argument("--cache", default="", help="base-model cache directory (default: model.cache_dir)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="kill-soak-") as tmp:
        work = Path(tmp)
        reference = one_run(args, work, 0, None, rng)
        assert reference["code"] == 0 and all(reference["checks"].values()), reference["tail"]
        print(f"reference: {reference['seconds']:.0f}s, candidates {sum(reference['counts'].values())}, "
              f"pass@k {reference['pass_at_k']}", flush=True)
        exact = 0
        for i in range(1, args.n + 1):
            result = one_run(args, work, i, reference, rng)
            bad = compare(result, reference)
            exact += not bad
            print(f"run {i}/{args.n}: killed {result['victim']} after {result['delay']:.1f}s, "
                  f"{result['seconds']:.0f}s, role_restart events {result['restarts']}: "
                  f"{'exact' if not bad else 'DIFFERS in ' + ', '.join(bad)}", flush=True)
            if bad:
                print(result["tail"], flush=True)
    print(f"kill soak: {exact}/{args.n} runs exact (counts, one verdict each, integrity, pass@k, critic metrics) "
          f"with one kill -9 of a random role at a random moment; preset {args.preset}, seed {args.seed}")
    return 0 if exact == args.n else 1


if __name__ == "__main__":
    sys.exit(main())
