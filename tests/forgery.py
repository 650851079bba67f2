"""Forged traffic against a live run, shared by the hostile end-to-end tests
(tests/test_e2e_hostile.py on one host, tests/test_ray_cluster.py from a
second network namespace over tcp).

  python tests/forgery.py RUN_DIR SECONDS          forge until SECONDS pass or SIGTERM
  python tests/forgery.py RUN_DIR SECONDS --ask    the no-reply probe; prints its reply counts as JSON

Both read the run's endpoints and keys from RUN_DIR (the attacker holds a
stolen role key, as a process of the same user would) and talk to whatever
address endpoints.json names: 127.0.0.1 / ipc on one host, the head's tcp
address from another. As a script it needs this checkout on PYTHONPATH.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import zmq

from constellation.protocol import messages as m
from constellation.protocol.transport import Keys, Link, client_keys


def wait_for_run(runs: Path, proc: subprocess.Popen, timeout: float = 600) -> Path:
    """The run directory of ``proc`` once its keys and endpoints exist (what an attacker needs)."""
    deadline = time.monotonic() + timeout
    while not list(runs.glob("*/keys/server.key")) or not list(runs.glob("*/endpoints.json")):
        assert time.monotonic() < deadline and proc.poll() is None, "the run never made its keys"
        time.sleep(0.2)
    return next(runs.glob("*/keys")).parent


def forged_verdicts(rid: str) -> m.Verdicts:
    return m.Verdicts(request_id=rid, items=[m.Verdict(candidate_id=f"train/1/p{i}/0", problem_id=f"p{i}",
                                                      status="pass", visible_passed=3, visible_total=3,
                                                      heldout_correct=True, detail="forged")
                                            for i in range(8)])


def _stranger(run_dir: Path) -> Keys:
    """A fresh CURVE key pair of no run, which knows the server's public key (that is public)."""
    public, secret = zmq.curve_keypair()
    return Keys(public, secret, server=client_keys(run_dir, "generator").server)


def attack(run_dir: Path, stop: threading.Event) -> int:
    """Forge until stopped: verdicts under the names "verifier" (taken) and
    "judge" with the generator's key, Finished with the trainer's key, and
    both again with a key of no run. Returns the rounds of forgeries sent."""
    endpoints = json.loads((run_dir / "endpoints.json").read_text())
    stolen, server, stranger = client_keys(run_dir, "generator"), client_keys(run_dir, "trainer"), _stranger(run_dir)
    links = [Link("dealer", endpoints["hub"], bind=False, identity=name, keys=keys)
             for name in ("verifier", "judge") for keys in (stolen, stranger)]
    pushes = [Link("push", endpoints["lifecycle"], bind=False, keys=keys) for keys in (server, stranger)]
    n = 0
    while not stop.wait(0.3):
        n += 1
        for link in links:
            link.send(m.Ready(role="verifier", pid=4242, impl="forged"))
            link.send(forged_verdicts(f"verify-{n}"))
        for push in pushes:
            push.send(m.Finished(ok=True, summary="forged"))
    for link in links + pushes:
        link.close()
    return n


def ask(run_dir: Path, seconds: float) -> dict[str, int]:
    """Frames that come back to an undecodable frame sent to the hub (an
    admitted peer gets an Error reply to it) -> {sender: frames}: from a
    stranger's CURVE key, from a socket without CURVE, and, the control that
    the path and the hub work, from a second connection with the critic's key.
    Waits up to ``seconds`` for the control's reply, then 3 s more."""
    hub = json.loads((run_dir / "endpoints.json").read_text())["hub"]
    ctx = zmq.Context.instance()
    senders = {"stranger": _stranger(run_dir), "plain": None, "control": client_keys(run_dir, "critic")}
    socks = {}
    for name, keys in senders.items():
        sock = socks[name] = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if keys is not None:
            sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = keys.public, keys.secret, keys.server
        sock.connect(hub)
        sock.send_multipart([m.HEADER, b"\xc1"])  # 0xc1: never valid MessagePack
    replies = dict.fromkeys(socks, 0)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for name, sock in socks.items():
            while sock.poll(100):
                sock.recv_multipart()
                replies[name] += 1
        if replies["control"]:
            deadline = min(deadline, time.monotonic() + 3)
    for sock in socks.values():
        sock.close(0)
    return replies


def check_refused(run_dir: Path, out: str) -> None:
    """The evidence that the forgeries of ``attack`` were refused: no forged
    verdict stored, every candidate verified, and each refusal logged (the
    supervisor's output ``out`` and the coordinator's log)."""
    db = sqlite3.connect(run_dir / "run.sqlite")
    forged = db.execute("SELECT COUNT(*) FROM verdicts WHERE detail = 'forged'").fetchone()[0]
    unverified = db.execute("SELECT COUNT(*) FROM candidates c LEFT JOIN verdicts v ON v.candidate_id = c.id "
                            "WHERE v.candidate_id IS NULL").fetchone()[0]
    db.close()
    assert forged == 0 and unverified == 0, (forged, unverified)
    assert "refused a Finished" in out  # the trainer's key claiming the coordinator's Finished
    coordinator_log = (run_dir / "logs" / "coordinator.log").read_text()
    # the generator's key as "verifier": refused by the hub for want of a launch token, by the request
    # loop, or by the hub as a second connection of "generator" (which one depends on who connected first)
    assert any(why in coordinator_log for why in ("without the token of a process the supervisor started",
                                                  "refused Ready from generator", "second connection of 'generator'"))
    assert "is not one of this run's" in coordinator_log  # the ZAP handler turning a stranger's key away


def main(argv: list[str]) -> None:
    if len(argv) not in (2, 3) or argv[2:] not in ([], ["--ask"]):
        raise SystemExit(f"usage: python tests/forgery.py RUN_DIR SECONDS [--ask]; got {argv}")
    run_dir, seconds = Path(argv[0]), float(argv[1])
    if argv[2:]:
        print(json.dumps(ask(run_dir, seconds)), flush=True)
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    timer = threading.Timer(seconds, stop.set)
    timer.daemon = True  # a SIGTERM ends the process before the timer does
    timer.start()
    print(json.dumps({"forged_rounds": attack(run_dir, stop)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
