"""``constellation up``: check the config, make or resume the run directory,
and run the roles under the launcher ``launch.launcher`` names.

It sits above both launchers: ``launch.supervisor`` (roles as child
processes) and ``launch.ray_launcher`` (roles as Ray actors, a ``Supervisor``
subclass), so neither imports the other's chooser. Ray is imported only when
a config asks for it.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path

from rich.console import Console

from constellation.protocol import config as config_mod
from constellation.protocol.transport import private_dir
from constellation.runtime.preflight import check_values, checked_split
from constellation.runtime.store import finished_run, save_split
from launch.supervisor import Supervisor, SupervisorError


def make_run_dir(cfg: config_mod.Config) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(cfg.run.runs_dir).resolve() / f"{cfg.run.name}-{stamp}"
    n = 1
    while run_dir.exists():
        n += 1
        run_dir = run_dir.with_name(f"{cfg.run.name}-{stamp}-{n}")
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    private_dir(run_dir)
    for sub in ("logs", "adapters"):
        (run_dir / sub).mkdir(parents=True)
    return run_dir


def up(preset: str = "tiny", overrides: list[str] | None = None, console: Console | None = None,
       run_dir: Path | None = None) -> tuple[int, Path]:
    """Run a constellation in a new run directory, or in ``run_dir``: a new
    one there, or, if it holds a run already, that run resumed from its store
    (finished rounds are kept; the config must be the same).

    Every value, path and task file is checked before anything is written
    (constellation/runtime/preflight.py): a refused start leaves no run
    directory and raises ConfigError with one line."""
    cfg = check_values(config_mod.load(preset, overrides))
    launcher = supervisor_class(cfg)
    if run_dir is not None:
        run_dir = Path(run_dir).resolve()
        ended = _resumable(cfg, run_dir)
        if ended is not None:
            (console or Console()).print(f"{run_dir} holds a finished run (ok={ended.ok}); nothing to resume")
            return (0 if ended.ok else 1), run_dir
    split = checked_split(cfg)  # opens and validates the task files: the last check before a write
    if run_dir is None:
        run_dir = make_run_dir(cfg)
    else:
        private_dir(run_dir)
        for sub in ("logs", "adapters"):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
    save_split(run_dir, split)  # launch/prepare.py reads it instead of making it again
    return launcher(cfg, run_dir, console).run(), run_dir


def _resumable(cfg: config_mod.Config, run_dir: Path):
    """A run already in ``run_dir`` must have this config -> its RunEnd when it finished, else None."""
    saved = run_dir / "config.toml"
    if saved.exists() and config_mod.load_file(saved) != cfg:
        raise SupervisorError(f"{run_dir} holds a run with another config; resume it with the same "
                              f"--preset and --set options (see {saved}), or pick a new --run-dir")
    try:
        return finished_run(run_dir)
    except sqlite3.DatabaseError as e:  # a damaged or foreign file: name it, touch nothing
        raise SupervisorError(f"{run_dir / 'run.sqlite'}: not a readable run store ({e}); "
                              f"nothing was changed") from None


def supervisor_class(cfg: config_mod.Config) -> type[Supervisor]:
    """``launch.launcher``: "local" runs the roles as child processes, "ray" as Ray actors."""
    if cfg.launch.launcher == "local":
        return Supervisor
    if cfg.launch.launcher == "ray":
        from launch.ray_launcher import RaySupervisor

        return RaySupervisor
    raise SupervisorError(f"launch.launcher must be 'local' or 'ray', got {cfg.launch.launcher!r}")
