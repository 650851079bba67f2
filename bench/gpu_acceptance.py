"""GPU acceptance: one short round of the GPU path on one CUDA card, measured.

    scripts/gpu_acceptance.sh [--model FOLDER_OR_HUB_ID] [--keep]
    python bench/gpu_acceptance.py ...                      (the same)

Runs ``constellation up`` with the qwen3-4b-24gb preset's roles (vLLM
generator with LoRA hot-swap, NF4 QLoRA STaR trainer, policy_head critic) on
the arithmetic task for one round with small counts, while a sampler thread
polls ``nvidia-smi`` for each process's GPU memory. Then it checks and prints:
  * the run finished (exit 0) and round 1 trained an adapter;
  * every round-1 evaluation candidate carries adapter version 1 (the swap
    reached vLLM) and every base candidate version 0;
  * per role: peak GPU memory measured vs the memory plan (launch/memory_plan.py);
    a role above plan + 15 % fails the check;
  * tokens/s of the base evaluation (completion tokens / wall seconds of
    that phase) and the adapter swap latency (round_end.adapter_load_seconds).

Exit codes: 0 = every check ran and passed; 1 = a check failed (or the run
did); 3 = DID NOT RUN: no CUDA device (nothing is claimed); 2 = bad usage.
Without --model it uses models/Qwen3-4B (the preset's default folder).
Budget: under 8 minutes on a 24 GB card with a 4B model (not yet measured:
this script has not run on a GPU). Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from launch.memory_plan import GIB, model_shape, plan_memory, probe_gpu  # noqa: E402

DID_NOT_RUN = 3
TOLERANCE = 1.15  # measured peak may exceed the plan by this factor before the check fails
OVERRIDES = ["run.rounds=1", "task.n_labeled=0", "task.n_train=64", "task.n_eval=16",
             "coordinator.problems_per_round=32", "coordinator.k=4", "eval.n_samples=8", "eval.ks=[1,2,4,8]",
             "eval.selection_ks=[4,8]", "eval.selection_k=4", "guard.enabled=false", "trainer.epochs=1",
             "critic.steps=10", "sampling.max_new_tokens=128"]


class GpuSampler(threading.Thread):
    """Polls nvidia-smi for each compute process's used memory; keeps the peak per pid (bytes)."""

    def __init__(self, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.every, self.peak, self.stop = every, {}, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True)
            for line in out.stdout.splitlines():
                pid, _, mib = line.partition(",")
                if pid.strip().isdigit() and mib.strip().isdigit():
                    self.peak[int(pid)] = max(self.peak.get(int(pid), 0), int(mib) * 2**20)
            self.stop.wait(self.every)


def run_round(model: str, runs: Path) -> tuple[int, Path | None, str]:
    cmd = [sys.executable, "-m", "launch.cli", "up", "--preset", "qwen3-4b-24gb", "--set", f'model.base="{model}"',
           "--set", f'run.runs_dir="{runs}"'] + [a for o in OVERRIDES for a in ("--set", o)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    run_dirs = sorted(d for d in runs.iterdir() if d.is_dir()) if runs.exists() else []
    return proc.returncode, (run_dirs[-1] if run_dirs else None), proc.stdout[-3000:] + proc.stderr[-3000:]


def adapter_versions(run_dir: Path) -> dict[str, set[int]]:
    db = sqlite3.connect(run_dir / "run.sqlite")
    rows = db.execute("SELECT phase || '/' || round, adapter_version FROM candidates").fetchall()
    db.close()
    out: dict[str, set[int]] = {}
    for key, version in rows:
        out.setdefault(key, set()).add(version)
    return out


def events(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]


def eval_tokens_per_second(run_dir: Path, base_path: Path) -> float:
    """Completion tokens of the base evaluation / wall seconds from its first progress line to its eval event."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_path, local_files_only=True)
    db = sqlite3.connect(run_dir / "run.sqlite")
    texts = [t for (t,) in db.execute("SELECT text FROM candidates WHERE phase = 'eval' AND round = 0")]
    db.close()
    evs = events(run_dir)
    start = next(e["time"] for e in evs if e.get("event") == "progress" and e.get("phase") == "eval")
    end = next(e["time"] for e in evs if e.get("event") == "eval")
    return sum(len(tok.encode(t, add_special_tokens=False)) for t in texts) / max(1e-9, end - start)


def memory_table(run_dir: Path, base_path: Path, peaks: dict[int, int], total: int) -> tuple[list[str], bool]:
    from constellation.protocol import config as config_mod

    cfg = config_mod.load_file(run_dir / "config.toml")
    plan: dict[str, int] = {}
    for item in plan_memory(cfg, model_shape(json.loads((base_path / "config.json").read_text())), total):
        plan[item.process] = plan.get(item.process, 0) + item.bytes
    pids = {role: info.get("pid") for role, info in json.loads((run_dir / "status.json").read_text())["roles"].items()}
    lines, ok = [f"  {'role':<10} {'planned GiB':>12} {'peak GiB':>10}  verdict"], True
    for role, planned in plan.items():
        peak = peaks.get(pids.get(role) or -1)
        if peak is None:
            lines.append(f"  {role:<10} {planned / GIB:12.2f} {'n/a':>10}  NOT MEASURED (pid not seen by nvidia-smi)")
            ok = False
            continue
        fits = peak <= planned * TOLERANCE
        ok &= fits
        lines.append(f"  {role:<10} {planned / GIB:12.2f} {peak / GIB:10.2f}  {'ok' if fits else 'ABOVE PLAN'}")
    return lines, ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/Qwen3-4B", help="a local model folder or a hub id in the HF cache")
    ap.add_argument("--runs", default="runs/gpu-acceptance", help="where the run directory is made")
    args = ap.parse_args(argv)
    gpu = probe_gpu()
    if not gpu["cuda"]:
        print("gpu_acceptance: DID NOT RUN: no CUDA device visible (torch.cuda.is_available() is False or no "
              "NVIDIA driver). Nothing was tested; no success is claimed.")
        return DID_NOT_RUN
    print(f"gpu_acceptance: {gpu['name']}, {gpu['free'] / GIB:.1f} of {gpu['total'] / GIB:.1f} GiB free")
    from constellation.models.base_model import validate_local_model

    base_path = validate_local_model(args.model)
    sampler = GpuSampler()
    sampler.start()
    t0 = time.monotonic()
    rc, run_dir, tail = run_round(args.model, Path(args.runs))
    sampler.stop.set()
    seconds = time.monotonic() - t0
    if rc != 0 or run_dir is None:
        print(f"gpu_acceptance: FAILED: constellation up exited {rc} after {seconds:.0f} s\n{tail}")
        return 1
    checks: list[tuple[str, bool]] = []
    versions = adapter_versions(run_dir)
    checks.append((f"base eval candidates carry v0: {sorted(versions.get('eval/0', []))}", versions.get("eval/0") == {0}))
    checks.append((f"round-1 eval candidates carry v1 after the swap: {sorted(versions.get('eval/1', []))}",
                   versions.get("eval/1") == {1}))
    table, memory_ok = memory_table(run_dir, base_path, sampler.peak, gpu["total"])
    checks.append(("peak GPU memory per role within the plan (+15 %)", memory_ok))
    swap = [e.get("adapter_load_seconds", 0.0) for e in events(run_dir) if e.get("event") == "round_end"]
    print("\n".join(table))
    print(f"  eval tokens/s (base, wall): {eval_tokens_per_second(run_dir, base_path):.0f}")
    print(f"  adapter swap latency: {', '.join(f'{s:.2f} s' for s in swap) or 'none recorded'}")
    print(f"  run: {run_dir} in {seconds:.0f} s (budget 480 s)")
    checks.append((f"finished within 8 minutes ({seconds:.0f} s)", seconds <= 480))
    for text, ok in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {text}")
    passed = all(ok for _, ok in checks)
    print(f"gpu_acceptance: {'PASSED' if passed else 'FAILED'} ({sum(ok for _, ok in checks)}/{len(checks)} checks)")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
