"""Everything a start checks before it writes anything.

``constellation up`` (and ``probe``, ``study``, ``control``) call ``preflight``
before a run directory exists, so a refused start leaves nothing behind and
prints one ``error:`` line:

1. the config's values: types, choices and bounds of each field
   (constellation/protocol/config.py, when it is loaded) and the rules between
   fields (config_check.py);
2. its paths: each field declared ``path=<kind>`` names a thing of that kind
   (config_check.path_problems; ``constellation config`` reports a wrong
   kind, a start also a missing file);
3. its task: the split is made here, which opens and validates every task
   file (a missing field, a non-object line, NUL bytes, an empty file: the
   task names ``file:line``), and its sizes are checked against what the task
   produced (``split_problems``).

The split made here is the run's split: the caller saves it in the run
directory, so preparation does not make it again.
"""

from __future__ import annotations

from typing import Any

from constellation.protocol.config import Config, ConfigError
from constellation.protocol.messages import Split
from constellation.runtime.config_check import check_config, path_problems
from constellation.runtime.registry import resolve_task


def check_values(cfg: Config) -> Config:
    """-> cfg, or ConfigError with the first bad relation or path (steps 1 and 2)."""
    check_config(cfg)
    found = path_problems(cfg)
    if found:
        raise ConfigError(found[0])
    return cfg


def checked_split(cfg: Config) -> Any:
    """The task's split of this config, its files read and validated, its sizes
    checked -> the split, or ConfigError with the task's own one-line reason."""
    task = resolve_task(cfg.task.impl)
    try:
        split = task.make_split(cfg.task, cfg.task_seed())
    except OSError as e:  # an unreadable file the task did not name itself
        raise ConfigError(f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e)) from None
    except ValueError as e:  # a bad task file or a size the task cannot make, named in the message
        raise ConfigError(str(e)) from None
    found = split_problems(cfg, split)
    if found:
        raise ConfigError(found[0])
    return split


def split_problems(cfg: Config, split: Any) -> list[str]:
    """The split's sizes against what the run needs from it, one line each."""
    t, found = cfg.task, []
    made = f'task.impl = "{cfg.task.impl}"' + (f" ({t.path or t.eval_source})" if t.path or t.eval_source else "")
    if not split.eval:
        found.append(f"{made} made no evaluation problem (task.n_eval = {t.n_eval}); allowed: a task with problems")
    n_val = cfg.guard.val_problems if cfg.guard.enabled else 0
    if len(split.train) <= n_val:
        found.append(f"{made} made {len(split.train)} training problems (task.n_train = {t.n_train}, after "
                     f"{len(split.eval)} evaluation problems, task.n_eval = {t.n_eval}), not more than "
                     f"guard.val_problems = {n_val}; allowed: a larger task, a smaller task.n_eval or "
                     f"guard.val_problems, or guard.enabled = false")
    return found


def preflight(cfg: Config) -> Split:
    """Steps 1 to 3 -> the run's split, or ConfigError before anything is written."""
    return checked_split(check_values(cfg))
