"""End to end: replies that do not cover their requests, and Ready messages
from processes nobody started, on a live smoke run.

The verifier, generator and critic are the real ones, except that each
answers its first few requests with a reply that does not cover them (empty
verdicts, half the candidates, a score for a candidate of no phase:
tests/doctored_roles.py), while a peer holding each role's stolen key keeps
announcing a Ready with a fake pid, to the hub and to the supervisor. The run
must end as a clean run of the same config ends (the same verdict on every
candidate), with the bad replies counted and no restart recorded. On main at
f3fc5fc the empty verdicts alone hung the run forever.
"""

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
from constellation.protocol.transport import Link, client_keys
from constellation.runtime.store import read_events
from forgery import wait_for_run
from smoke_run import up_smoke

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
DETERMINISTIC = ["trainer.max_seconds=0", "run.rounds=1"]  # a step budget: two clean runs store the same verdicts
DOCTORED = ['verifier.impl="tests.doctored_roles:EmptyFirstVerifier"',
            'generator.impl="tests.doctored_roles:HalfFirstGenerator"',
            'critic.impl="tests.doctored_roles:StrangerFirstCritic"']
ROLES = ("generator", "verifier", "critic", "trainer")


def fingerprint(run_dir: Path) -> list[tuple]:
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        return db.execute("SELECT v.candidate_id, v.status, v.heldout_correct, v.heldout_outputs, c.text "
                          "FROM verdicts v JOIN candidates c ON c.id = v.candidate_id ORDER BY 1").fetchall()


def fake_readies(run_dir: Path, stop: threading.Event) -> int:
    """Announce every role again and again with a fake pid, from its stolen key, to the hub and the supervisor."""
    endpoints = json.loads((run_dir / "endpoints.json").read_text())
    hubs = {r: Link("dealer", endpoints["hub"], bind=False, identity=r, keys=client_keys(run_dir, r)) for r in ROLES}
    lives = {r: Link("push", endpoints["lifecycle"], bind=False, keys=client_keys(run_dir, r)) for r in ROLES}
    n = 0
    while not stop.wait(0.5):
        n += 1
        for r in ROLES:
            fake = m.Ready(role=r, pid=40000 + n, impl="forged")
            hubs[r].send(fake)
            lives[r].send(fake)
    for link in [*hubs.values(), *lives.values()]:
        link.close()
    return n


def test_bad_replies_and_fake_readies_end_as_the_clean_run(tmp_path, model_cache):
    clean_dir, _ = up_smoke(tmp_path / "clean", model_cache, *DETERMINISTIC)
    runs = tmp_path / "attacked" / "runs"
    cmd = [sys.executable, "-m", "launch.cli", "up", "--preset", "smoke", "--set", f'run.runs_dir="{runs}"',
           "--set", f'model.cache_dir="{model_cache}"', *[a for s in DETERMINISTIC + DOCTORED for a in ("--set", s)]]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stop = threading.Event()
    try:
        run_dir = wait_for_run(runs, proc)
        attacker = threading.Thread(target=fake_readies, args=(run_dir, stop), daemon=True)
        attacker.start()
        out, _ = proc.communicate(timeout=900)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    events = read_events(run_dir)
    end = events[-1]
    assert isinstance(end, ev.RunEnd) and end.ok, end
    assert not [e for e in events if isinstance(e, ev.RoleRestart)], "a fake Ready counted as a restart"
    assert end.counters.get("refused_replies", 0) >= 6 and end.counters.get("partial_replies", 0) >= 1, end.counters
    assert "refused a Ready for" in out  # the supervisor turned the fake announcements away
    assert "without the token of a process the supervisor started" in (run_dir / "logs" / "coordinator.log").read_text()
    assert fingerprint(run_dir) == fingerprint(clean_dir)
    print(f"attacked run: {time.monotonic() - t0:.0f} s, counters {end.counters}")
