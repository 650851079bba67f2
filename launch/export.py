"""``constellation export --tensorboard|--wandb|--mlflow RUN_DIR``: a finished
run's tracking logs, rebuilt from its run.sqlite.

The events of the store's metrics table are replayed, in the order they were
written, through the same ``Tracker`` a live run feeds (runtime/tracking.py),
so the rebuilt logs hold what the live ones would. The run's own config.toml
gives the W&B project and MLflow experiment; the chosen backends are on
whatever it says. A rebuilt TensorBoard log replaces RUN_DIR/tensorboard.
Given a study directory (or any folder of runs), every run.sqlite below it is
exported.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import msgspec

from constellation.protocol import config as config_mod
from constellation.runtime.store import stored_events
from constellation.runtime.tracking import Tracker
from constellation.runtime.tracking_backends import TENSORBOARD_DIR, open_backends

BACKENDS = ("tensorboard", "wandb", "mlflow")


class ExportError(RuntimeError):
    pass


def run_dirs(path: Path) -> list[Path]:
    """``path`` itself when it is a run directory, else every run directory below it."""
    if (path / "run.sqlite").is_file():
        return [path]
    found = sorted(p.parent for p in path.rglob("run.sqlite"))
    if not found:
        raise ExportError(f"no run.sqlite in or below {path}: not a run or study directory")
    return found


def export_run(run_dir: Path, backends: set[str]) -> int:
    """Rebuild ``backends``' logs of one run -> the number of events replayed."""
    saved = run_dir / "config.toml"
    cfg = config_mod.load_file(saved) if saved.is_file() else config_mod.Config()
    on = {name: name in backends for name in BACKENDS}
    cfg = msgspec.structs.replace(cfg, tracking=msgspec.structs.replace(cfg.tracking, **on))
    if "tensorboard" in backends:
        shutil.rmtree(run_dir / TENSORBOARD_DIR, ignore_errors=True)
    opened = open_backends(cfg, run_dir)
    if len(opened) < len(backends):
        raise ExportError(f"{run_dir}: could not start every one of {sorted(backends)} (is the package installed? "
                          f"pip install -e \".[tracking]\"); see the warning above")
    events = stored_events(run_dir)
    tracker = Tracker(opened)
    for event in events:
        tracker(event)
    tracker.close()
    return len(events)


def export(path: Path, backends: set[str]) -> list[tuple[Path, int]]:
    """Every run at or below ``path`` -> [(run directory, events replayed)]."""
    if not backends:
        raise ExportError("nothing to export to: pass --tensorboard, --wandb and/or --mlflow")
    return [(run_dir, export_run(run_dir, backends)) for run_dir in run_dirs(path)]
