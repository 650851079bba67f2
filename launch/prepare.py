"""Make the task split and build or reuse the base model before the roles
start: ``python -m launch.prepare RUN_DIR``.

Runs in its own process so that the supervisor never imports torch. Writes
the base model's folder path to ``RUN_DIR/base_model.txt``; the generator,
trainer (and a critic sharing the base) read it at setup. Progress lines
("PROGRESS <fraction> <message>") go to stdout, which the supervisor shows.
A user's error (a missing or unreadable file, a model folder that is not a
model, a bad task file, a full disk) ends it with one line
"ERROR <path>: <cause>" and exit code 2, which the supervisor prints alone.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

from constellation.protocol import config
from constellation.runtime.registry import resolve_task
from constellation.runtime.store import SPLIT_FILE, load_split, save_split
from launch.errors import os_error_line
from roles.base import set_torch_threads

Progress = Callable[[float, str], None] | None


def prepare(cfg: config.Config, run_dir: Path, progress: Progress = None, split: Any = None) -> tuple[Any, Path]:
    """Make and save the run's split (unless given: made by the start's
    preflight), build or reuse the base model and point
    ``RUN_DIR/base_model.txt`` at it -> (split, base model folder)."""
    from constellation.models.base_model import ensure_base_model

    task = resolve_task(cfg.task.impl)
    if split is None:
        split = task.make_split(cfg.task, cfg.task_seed())
    save_split(run_dir, split)  # the coordinator reads it instead of making it again
    tokens = task.tokenizer_tokens() if callable(getattr(task, "tokenizer_tokens", None)) else []
    path = ensure_base_model(cfg.model, cfg.task, cfg.task_seed(), split.labeled, progress=progress,
                             dsl_tokens=tokens)
    (run_dir / "base_model.txt").write_text(str(path))
    return split, path


def main(argv: list[str] | None = None) -> int:
    run_dir = Path((argv or sys.argv[1:])[0])
    cfg = config.load_file(run_dir / "config.toml")
    set_torch_threads(cfg.model.threads)

    def progress(fraction: float, message: str) -> None:
        print(f"PROGRESS {fraction:.4f} {message}", flush=True)

    saved = run_dir / SPLIT_FILE  # made and saved by the supervisor's preflight, before the roles start
    try:
        _, path = prepare(cfg, run_dir, progress, load_split(run_dir) if saved.exists() else None)
    except OSError as e:  # FileNotFoundError (a missing model), ENOSPC, EROFS, EACCES
        print(f"ERROR {os_error_line(e)}", flush=True)
        return 2
    except ValueError as e:  # a task file or model folder that cannot be used, named in the message
        print(f"ERROR {e}", flush=True)
        return 2
    print(f"INFO base model ready at {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
