"""The interface every role implementation follows.

The process wrapper (``constellation/runtime/process.py``) owns the sockets, the READY
handshake, heartbeats and shutdown; a ``Role`` only turns one work message into
one reply. That keeps each implementation a thin, testable class: tests call
``setup()`` and ``handle()`` directly, without any socket.

A failure that belongs to one request (a bad candidate, an unparseable
program) must come back as a typed result inside the reply. Raising from
``handle`` is for failures of the request itself; the wrapper turns the
exception into an ``Error`` reply and the process goes on.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, ClassVar

from constellation.protocol.config import Config


class Role(abc.ABC):
    name: ClassVar[str]  # "generator" | "verifier" | "critic" | "trainer"
    accepts: ClassVar[tuple[type, ...]]  # message types handle() takes

    def __init__(self, cfg: Config, run_dir: Path) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)

    def setup(self) -> dict[str, Any]:
        """Load models and other heavy state. Returns info sent with READY."""
        return {}

    @abc.abstractmethod
    def handle(self, msg: Any) -> Any:
        """One request in, one reply message out."""

    def close(self) -> None:
        """Release what setup() started (worker processes, engines). Runs once,
        when the role shuts down; a role that holds nothing needs no override."""

    def stats(self) -> dict[str, float]:
        """Counters sent with every heartbeat. By convention "done" (items
        handled so far) and "per_second" (items per busy second), which the
        monitor shows as the role's throughput; anything else is extra."""
        return {}


def set_torch_threads(n: int) -> None:
    """Each role process limits its own torch threads (default 1: on small
    tensors and 2-core machines, 2 threads are ~15x slower than 1)."""
    import torch

    torch.set_num_threads(max(1, int(n)))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set once in this process
        pass
