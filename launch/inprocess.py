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

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from constellation.protocol import config
from constellation.runtime.client import InProcessRoleClient
from constellation.runtime.coordinator import Coordinator
from constellation.runtime.registry import resolve_role, worker_roles
from launch.prepare import Progress, prepare


@contextmanager
def in_process(cfg: config.Config, run_dir: Path, roles: tuple[str, ...] | None = None,
               progress: Progress = None, split: Any = None) -> Iterator[Coordinator]:
    """Prepare ``run_dir`` (config, split unless given, base model) as the supervisor would,
    set up the configured implementation of each role in ``roles`` (default:
    the run's worker roles, as ``up`` starts them), and yield the coordinator
    that drives them."""
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
