"""`constellation up --launcher ray` on two "hosts": two network namespaces
joined by a veth pair, each a node of one Ray cluster (tests/ray_hosts.py).

The generator (and the critic) prefer host b, the coordinator, verifier and
trainer run on host a: adapters written by the trainer on a are loaded by the
generator on b from the shared run directory. The second case forges from
host b, over tcp on the veth pair (tests/forgery.py): the role-identity checks
hold across hosts. The third kills host b's raylet mid-round: Ray restarts
b's roles on a and the run ends with every candidate counted. Runs only where namespaces can be made (root) and Ray is
installed (the ray extra; CI installs it).
"""

from __future__ import annotations

import json
import signal
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from constellation.protocol import events as ev
from constellation.runtime.store import read_events
from forgery import check_refused, wait_for_run
from ray_hosts import HEAD_IP, ROOT, WORKER_IP, namespaces_unavailable, two_hosts

pytestmark = pytest.mark.slow

try:
    import ray  # noqa: F401
except ImportError:
    pytest.skip("Ray is not installed (pip install -e '.[ray]')", allow_module_level=True)
if why := namespaces_unavailable():
    pytest.skip(f"two hosts need network namespaces: {why}", allow_module_level=True)

SMOKE_COUNTS = {"eval/0": 6 * 8, "val/0": 6 * 4, "train/1": 12 * 4, "eval/1": 6 * 8, "val/1": 6 * 4}


@pytest.fixture(scope="module")
def hosts():
    with two_hosts() as h:
        yield h


def _up(hosts, runs: Path, cache: Path, *sets: str) -> subprocess.Popen:
    """constellation up on host a; generator and critic prefer host b (named by IP and by
    label), trainer and verifier host a."""
    cmd = [sys.executable, "-m", "launch.cli", "up", "--preset", "smoke", "--launcher", "ray",
           "--ray-address", hosts.address, "--set", f'run.runs_dir="{runs}"', "--set", f'model.cache_dir="{cache}"',
           "--set", f'launch.node={{generator = "{WORKER_IP}", critic = "host=cst-b", trainer = "{HEAD_IP}", '
           'verifier = "host=cst-a"}']
    for s in sets:
        cmd += ["--set", s]
    return subprocess.Popen(hosts.cmd(hosts.ns_a, *cmd), cwd=ROOT, env=hosts.env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen, timeout: float = 900) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-5000:]
    return out


def _counts(run_dir: Path) -> dict[str, int]:
    """Candidates per phase/round, after checking each one was verified and scored."""
    db = sqlite3.connect(run_dir / "run.sqlite")
    try:
        missing = db.execute("SELECT COUNT(*) FROM candidates c LEFT JOIN verdicts v ON v.candidate_id = c.id "
                             "LEFT JOIN scores s ON s.candidate_id = c.id "
                             "WHERE v.candidate_id IS NULL OR s.candidate_id IS NULL").fetchone()[0]
        assert missing == 0, f"{missing} candidates without a verdict or a score"
        return dict(db.execute("SELECT phase || '/' || round, COUNT(*) FROM candidates GROUP BY phase, round"))
    finally:
        db.close()


def _placement(run_dir: Path) -> dict:
    return json.loads((run_dir / "placement.json").read_text())


def test_smoke_run_with_generator_and_trainer_on_different_hosts(hosts, tmp_path, model_cache):
    runs = tmp_path / "runs"
    out = _finish(_up(hosts, runs, model_cache))
    run_dir = next(runs.iterdir())
    placed = _placement(run_dir)
    assert {role: p["node"] for role, p in placed.items()} == {
        "coordinator": HEAD_IP, "verifier": HEAD_IP, "trainer": HEAD_IP, "generator": WORKER_IP, "critic": WORKER_IP}
    assert all(p["restarts"] == 0 for p in placed.values())
    events = read_events(run_dir)
    assert [e.model for e in events if isinstance(e, ev.Eval)] == ["base", "round-1"]
    assert isinstance(events[-1], ev.RunEnd) and events[-1].ok
    assert _counts(run_dir) == SMOKE_COUNTS
    # the round-1 evaluation sampled with the adapter the trainer wrote on the other host
    assert (run_dir / "adapters" / "v1" / "adapter_config.json").exists()
    assert json.loads((run_dir / "endpoints.json").read_text())["hub"].startswith(f"tcp://{HEAD_IP}:")
    assert "placed by Ray" in out


def _from_host_b(hosts, *args: str) -> subprocess.Popen:
    """``python tests/forgery.py ARGS`` in namespace b: a process of another host."""
    return subprocess.Popen(hosts.cmd(hosts.ns_b, sys.executable, str(ROOT / "tests" / "forgery.py"), *args),
                            cwd=ROOT, env=hosts.env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_forgeries_from_the_second_host_are_refused_over_tcp(hosts, tmp_path, model_cache):
    """From host b, over tcp to host a's hub and lifecycle socket: verdicts
    under the name "verifier" and Finished(ok=True) with another role's key
    and with a stranger's key, while a stranger's request gets no reply. The
    run ends with the honest counts, and the refusals name host b."""
    runs = tmp_path / "runs"
    proc = _up(hosts, runs, model_cache)
    attackers: list[subprocess.Popen] = []
    try:
        run_dir = wait_for_run(runs, proc)
        endpoints = json.loads((run_dir / "endpoints.json").read_text())
        assert all(ep.startswith(f"tcp://{HEAD_IP}:") for ep in endpoints.values()), endpoints
        attackers = [_from_host_b(hosts, str(run_dir), "900"), _from_host_b(hosts, str(run_dir), "300", "--ask")]
        out = _finish(proc)
    finally:
        for attacker in attackers:
            attacker.terminate()
    forger, asker = (a.communicate(timeout=60)[0] for a in attackers)
    assert attackers[0].returncode == 0 and json.loads(forger)["forged_rounds"] > 0, forger[-3000:]
    # an admitted peer gets an Error reply to its undecodable frame: only the run's key does
    assert attackers[1].returncode == 0 and json.loads(asker) == {"stranger": 0, "plain": 0, "control": 1}, asker
    events = read_events(run_dir)
    assert isinstance(events[-1], ev.RunEnd) and events[-1].ok
    assert [e.round for e in events if isinstance(e, ev.Eval)] == [0, 1]  # not ended by a forged Finished
    assert _counts(run_dir) == SMOKE_COUNTS
    check_refused(run_dir, out)
    # the strangers were turned away as clients on host b, at the hub and at the lifecycle socket
    assert f"from {WORKER_IP} on {endpoints['hub']}" in (run_dir / "logs" / "coordinator.log").read_text()
    assert f"from {WORKER_IP} on {endpoints['lifecycle']}" in out


def test_losing_the_second_host_mid_round_moves_its_roles_and_loses_nothing(hosts, tmp_path, model_cache):
    """Runs last: host b's raylet does not come back."""
    runs = tmp_path / "runs"
    proc = _up(hosts, runs, model_cache, "coordinator.problems_per_round=30",
               'generator.impl="tests.slow_roles:SlowGenerator"')
    deadline = time.monotonic() + 600
    run_dir = None
    while time.monotonic() < deadline and proc.poll() is None:
        run_dir = next((d for d in runs.glob("*") if d.is_dir()), None)
        if run_dir and any(isinstance(e, ev.Progress) and e.phase == "train" and 0 < e.candidates < 60
                           for e in read_events(run_dir)):
            break
        time.sleep(0.2)
    if not (run_dir and proc.poll() is None):
        proc.kill()
        raise AssertionError(f"the train phase of round 1 never started:\n{proc.communicate()[0][-4000:]}")
    os.kill(hosts.raylet_pid(hosts.ns_b), signal.SIGKILL)
    out = _finish(proc)
    placed = _placement(run_dir)
    assert placed["generator"]["node"] == HEAD_IP and placed["generator"]["restarts"] >= 1, (placed, out[-3000:])
    assert placed["critic"]["node"] == HEAD_IP and placed["trainer"]["restarts"] == 0
    restarted = {e.role for e in read_events(run_dir) if isinstance(e, ev.RoleRestart)}
    assert "generator" in restarted
    assert _counts(run_dir) == {**SMOKE_COUNTS, "train/1": 30 * 4}
