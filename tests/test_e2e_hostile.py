"""End to end: a smoke run under forgery. While it runs, peers send forged
verdicts to the hub and a forged Finished(ok=True) to the supervisor, with a
key of another role or none (tests/forgery.py); the run ends with the honest
result and the refusals are logged."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from constellation.protocol import events as ev
from constellation.runtime.store import read_events
from forgery import attack, check_refused, wait_for_run

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def test_forged_verdicts_and_finished_are_refused(tmp_path, model_cache):
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "launch.cli", "up", "--preset", "smoke", "--set", f'run.runs_dir="{runs}"',
           "--set", f'model.cache_dir="{model_cache}"']
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stop = threading.Event()
    try:
        run_dir = wait_for_run(runs, proc)
        attacker = threading.Thread(target=attack, args=(run_dir, stop), daemon=True)
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
    check_refused(run_dir, out)
