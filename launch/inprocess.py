"""A whole constellation in this process: the real coordinator and the real role
classes, joined by ``InProcessRoleClient`` instead of sockets.

``constellation probe`` and the benches use it, so they run exactly the loop
``constellation up`` runs (the same phases, seeds, selection and store), only
without processes: one thread does everything, in order.

    with in_process(cfg, run_dir) as coordinator:
        coordinator.run()                      # every round, as `up` would
    with in_process(cfg, run_dir, roles=("generator", "verifier")) as coordinator:
        phase = coordinator.sample("probe", 0, problems, k=8)   # one phase
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from constellation.protocol import config
from constellation.runtime.client import InProcessRoleClient
from constellation.runtime.coordinator import Coordinator
from constellation.runtime.process import quiet_kernel_lookup
from constellation.runtime.registry import resolve_role, worker_roles
from launch.prepare import Progress, prepare


CONTROL_ROLES = ("generator", "verifier", "trainer")  # what launch/control.py runs in this process
PROBE_ROLES = ("generator", "verifier")


def hosting_problem(cfg: config.Config, roles: tuple[str, ...]) -> str | None:
    """Why this process cannot host one of ``roles`` -> one line, None when it can.
    A role whose section names another interpreter (``generator.python``, e.g.
    vllm's own venv) can only be started as a process, by ``constellation up``."""
    for role in roles:
        python = getattr(getattr(cfg, role), "python", "")
        if python and Path(python).expanduser().absolute() != Path(sys.executable).absolute():
            impl = getattr(cfg, role).impl
            return (f'{role}.python = "{python}": this command runs its roles inside its own process '
                    f'(launch/inprocess.py), so it cannot start {role}.impl = "{impl}" with another interpreter; '
                    f'allowed: {role}.python = "" with an impl this interpreter loads, '
                    f'e.g. --set {role}.impl="hf" --set {role}.python=""')
    return None


@contextmanager
def in_process(cfg: config.Config, run_dir: Path, roles: tuple[str, ...] | None = None,
               progress: Progress = None, split: Any = None) -> Iterator[Coordinator]:
    """Prepare ``run_dir`` (config, split unless given, base model) as the supervisor would,
    set up the configured implementation of each role in ``roles`` (default:
    the run's worker roles, as ``up`` starts them), and yield the coordinator
    that drives them."""
    problem = hosting_problem(cfg, roles or worker_roles(cfg))
    if problem is not None:
        raise config.ConfigError(problem)
    quiet_kernel_lookup()  # as in a role process: the roles below may import bitsandbytes
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.toml").write_text(config.to_toml(cfg))
    prepare(cfg, run_dir, progress, split)
    workers = {role: resolve_role(role, getattr(cfg, role).impl)(cfg, run_dir)
               for role in (roles or worker_roles(cfg))}
    client = InProcessRoleClient(workers).start()
    coordinator = Coordinator(cfg, run_dir, client)
    try:
        yield coordinator
    finally:
        coordinator.close()
        client.close()
