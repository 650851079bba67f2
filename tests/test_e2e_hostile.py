"""End to end: a smoke run under forgery. While it runs, peers send forged
verdicts to the hub and a forged Finished(ok=True) to the supervisor, with a
key of another role or none; the run ends with the honest result and the
refusals are logged."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from constellation.protocol import events as ev
from constellation.protocol import messages as m
from constellation.protocol.transport import Keys, Link, client_keys
from constellation.runtime.store import read_events

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def _forged_verdicts(rid: str) -> m.Verdicts:
    return m.Verdicts(request_id=rid, items=[m.Verdict(candidate_id=f"train/1/p{i}/0", problem_id=f"p{i}",
                                                      status="pass", visible_passed=3, visible_total=3,
                                                      heldout_correct=True, detail="forged")
                                            for i in range(8)])


def _attack(run_dir: Path, stop: threading.Event) -> None:
    """Forge until stopped: verdicts under the names "verifier" (taken) and
    "judge" with the generator's key, Finished with the trainer's key, and
    both again with a key of no run."""
    endpoints = json.loads((run_dir / "endpoints.json").read_text())
    stolen, server = client_keys(run_dir, "generator"), client_keys(run_dir, "trainer")
    import zmq

    public, secret = zmq.curve_keypair()
    stranger = Keys(public, secret, server=stolen.server)
    links = [Link("dealer", endpoints["hub"], bind=False, identity=name, keys=keys)
             for name in ("verifier", "judge") for keys in (stolen, stranger)]
    pushes = [Link("push", endpoints["lifecycle"], bind=False, keys=keys) for keys in (server, stranger)]
    n = 0
    while not stop.wait(0.3):
        n += 1
        for link in links:
            link.send(m.Ready(role="verifier", pid=4242, impl="forged"))
            link.send(_forged_verdicts(f"verify-{n}"))
        for push in pushes:
            push.send(m.Finished(ok=True, summary="forged"))
    for link in links + pushes:
        link.close()


def test_forged_verdicts_and_finished_are_refused(tmp_path, model_cache):
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "launch.cli", "up", "--preset", "smoke", "--set", f'run.runs_dir="{runs}"',
           "--set", f'model.cache_dir="{model_cache}"']
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stop = threading.Event()
    try:
        deadline = time.monotonic() + 600
        while not list(runs.glob("*/keys/server.key")) or not list(runs.glob("*/endpoints.json")):
            assert time.monotonic() < deadline and proc.poll() is None, "the run never made its keys"
            time.sleep(0.2)
        run_dir = next(runs.glob("*/keys")).parent
        attacker = threading.Thread(target=_attack, args=(run_dir, stop), daemon=True)
        attacker.start()
        out, _ = proc.communicate(timeout=600)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    events = read_events(run_dir)
    assert isinstance(events[-1], ev.RunEnd) and events[-1].ok
    assert [e.round for e in events if isinstance(e, ev.Eval)] == [0, 1]  # not ended after round 0
    db = sqlite3.connect(run_dir / "run.sqlite")
    forged = db.execute("SELECT COUNT(*) FROM verdicts WHERE detail = 'forged'").fetchone()[0]
    unverified = db.execute("SELECT COUNT(*) FROM candidates c LEFT JOIN verdicts v ON v.candidate_id = c.id "
                            "WHERE v.candidate_id IS NULL").fetchone()[0]
    db.close()
    assert forged == 0 and unverified == 0
    assert "refused a Finished" in out
    coordinator_log = (run_dir / "logs" / "coordinator.log").read_text()
    # the generator's key as "verifier": refused by the request loop, or by the
    # hub as a second connection of "generator" (which one depends on who connected first)
    assert "refused Ready from generator" in coordinator_log or "second connection of 'generator'" in coordinator_log
    assert "is not one of this run's" in coordinator_log  # the ZAP handler turning a stranger's key away
