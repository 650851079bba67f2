"""The smoke preset with the local launcher and with the Ray launcher, on the same machine.

    .venv/bin/python bench/ray_launcher.py             # needs root (network namespaces) and the ray extra
    .venv/bin/python bench/ray_launcher.py --repeats 2

Set-up: the two "hosts" of tests/test_ray_cluster.py (two network namespaces
joined by a veth pair, a Ray node in each, tests/ray_hosts.py). Every run is
``constellation up --preset smoke`` started inside host a, with the base model
built once beforehand into a cache the runs share (so no run pays for it).

- local: ``--launcher local`` (the default: five child processes, ipc sockets)
- ray:   ``--launcher ray`` with the generator and the critic on host b

For each run: the wall time of the whole command, and its start-up: from the
command's start to the supervisor's "all roles ready" line (base model from
the cache, roles started, each READY). Also the time ``ray start`` took for
the two nodes, a cost paid once per cluster, not per run. Prints one line per
launcher (medians over ``--repeats``) and the ray/local ratios.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from ray_hosts import WORKER_IP, two_hosts  # noqa: E402


def timed_up(hosts, runs: Path, cache: Path, *args: str) -> tuple[float, float]:
    """(wall seconds, seconds to "all roles ready") of one smoke run on host a."""
    cmd = [sys.executable, "-m", "launch.cli", "up", "--preset", "smoke", "--set", f'run.runs_dir="{runs}"',
           "--set", f'model.cache_dir="{cache}"', *args]
    start = time.perf_counter()
    proc = subprocess.Popen(hosts.cmd(hosts.ns_a, *cmd), cwd=ROOT, env=hosts.env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ready, lines = float("nan"), []
    for line in proc.stdout:
        lines.append(line)
        if "all roles ready" in line and ready != ready:
            ready = time.perf_counter() - start
    proc.wait()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args) or 'local'} run failed:\n{''.join(lines[-40:])}")
    return time.perf_counter() - start, ready


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    ray_args = ("--launcher", "ray", "--ray-address", "10.77.0.1:6379",
                "--set", f'launch.node={{generator = "{WORKER_IP}", critic = "{WORKER_IP}"}}')
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        runs, cache = Path(tmp) / "runs", Path(tmp) / "cache"
        t0 = time.perf_counter()
        with two_hosts() as hosts:
            cluster = time.perf_counter() - t0
            timed_up(hosts, runs, cache)  # builds the base model into the cache, not counted
            results: dict[str, list[tuple[float, float]]] = {"local": [], "ray": []}
            for _ in range(args.repeats):  # alternate, so a load change on the machine hits both
                results["local"].append(timed_up(hosts, runs, cache))
                results["ray"].append(timed_up(hosts, runs, cache, *ray_args))
    med = {k: (statistics.median(w for w, _ in v), statistics.median(r for _, r in v)) for k, v in results.items()}
    print(f"ray start (head + 1 worker node, once per cluster): {cluster:.1f} s")
    for name, (wall, ready) in med.items():
        print(f"{name:6s} smoke run wall {wall:6.1f} s   start-up to all roles ready {ready:5.1f} s")
    print(f"ray/local: wall x{med['ray'][0] / med['local'][0]:.2f}, start-up x{med['ray'][1] / med['local'][1]:.2f} "
          f"(+{med['ray'][1] - med['local'][1]:.1f} s)")


if __name__ == "__main__":
    main()
