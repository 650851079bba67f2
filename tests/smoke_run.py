"""`constellation up --preset smoke` in a child process, for end-to-end tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from constellation.protocol import events as ev
from constellation.runtime.store import read_event_lines

ROOT = Path(__file__).resolve().parent.parent


def up_smoke(tmp_path: Path, cache: Path, *sets: str, timeout: float = 900,
             preset: str = "smoke") -> tuple[Path, list[ev.Event]]:
    """Run the smoke preset (or ``preset``) with ``--set`` overrides, in tmp_path/runs, with the
    base model cached in ``cache``; assert it ended ok and every line of its
    metrics.jsonl is an event -> (run dir, events)."""
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "launch.cli", "up", "--preset", preset,
           "--set", f'run.runs_dir="{runs}"', "--set", f'model.cache_dir="{cache}"']
    for s in sets:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = next(d for d in runs.iterdir() if d.is_dir())
    events, bad = read_event_lines(run_dir / "metrics.jsonl")
    assert bad == 0 and isinstance(events[-1], ev.RunEnd) and events[-1].ok, (bad, events[-1:])
    return run_dir, events
