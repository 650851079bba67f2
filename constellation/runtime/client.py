"""How the coordinator reaches the worker roles: one interface, two implementations.

``RoleClient`` is all the coordinator's request loop sees: ``send(role, msg)``,
``recv(timeout) -> Envelope | None`` and the set of ``roles`` it serves.

  * ``ZmqRoleClient``: the constellation. Each role is its own process behind
    a DEALER socket; the client is the coordinator's ROUTER (one ``Link``).
  * ``InProcessRoleClient``: the same role objects in this process, no sockets.
    A request is handled when it is sent, and its reply is queued for ``recv``,
    so the coordinator runs exactly the loop it runs over ZeroMQ. ``probe``,
    the benches and unit tests drive the real coordinator through it.

Both deliver the same messages: the in-process client passes every request
and reply through MessagePack (``messages.encode``/``decode``), so a role never
shares a mutable object with the coordinator and a message that would not
survive the wire fails here too. A request a role fails on becomes an
``Error`` reply, exactly as the role process wrapper does it (``handle_request``).
"""

from __future__ import annotations

import logging
import os
import queue
from typing import Any, Callable, Protocol, Union

from constellation.protocol import messages as m
from constellation.protocol.transport import Envelope, Keys, Link

log = logging.getLogger(__name__)


class RoleClient(Protocol):
    roles: tuple[str, ...]  # the worker roles this client reaches

    def send(self, role: str, msg: Any) -> None: ...

    def recv(self, timeout: float) -> Envelope | None: ...

    def close(self) -> None: ...


def handle_request(worker: Any, msg: Any) -> Any:
    """One request to a role object -> its reply, or an ``Error`` naming the
    failure: a failed request never takes the role down."""
    try:
        return worker.handle(msg)
    except Exception as e:
        log.exception("request %s failed", getattr(msg, "request_id", "?"))
        return m.Error(request_id=getattr(msg, "request_id", ""), error_kind="role",
                       message=f"{type(e).__name__}: {e}")


# what a worker may send the coordinator; anything else is a decode error at the socket
REPLIES = Union[m.Ready, m.Error, m.Candidates, m.Verdicts, m.Scores, m.AdapterReady,  # noqa: UP007 -- for msgspec
                m.AdapterLoaded, m.CriticTrained, m.Judgments]


class ZmqRoleClient:
    """The coordinator's ROUTER socket: a role is addressed by its identity.
    With ``keys`` (CURVE) only the run's role keys connect, and a peer may
    only use the name its key is bound to."""

    def __init__(self, endpoint: str, roles: tuple[str, ...], keys: Keys | None = None,
                 accept_ready: Callable[[Any], bool] | None = None) -> None:
        self.roles = roles
        self.link = Link("router", endpoint, bind=True, expected=REPLIES, keys=keys, accept_ready=accept_ready)

    def send(self, role: str, msg: Any) -> None:
        self.link.send(msg, peer=role)

    def recv(self, timeout: float) -> Envelope | None:
        return self.link.recv(timeout=timeout)

    def close(self) -> None:
        self.link.close()


class InProcessRoleClient:
    """Role objects in this process (already constructed with ``(cfg, run_dir)``).
    ``start()`` runs each role's ``setup()`` and queues its Ready, as a role
    process announces itself when it has loaded its models."""

    def __init__(self, workers: dict[str, Any]) -> None:
        self.workers = workers
        self.roles = tuple(workers)
        self._replies: queue.Queue[Envelope] = queue.Queue()
        self._ready: dict[str, m.Ready] = {}

    def start(self) -> InProcessRoleClient:
        for role, worker in self.workers.items():
            info = worker.setup() or {}
            self._ready[role] = m.Ready(role=role, pid=os.getpid(), impl=type(worker).__name__, info=info)
            self._replies.put(Envelope(role, self._ready[role]))
        return self

    def send(self, role: str, msg: Any) -> None:
        worker = self.workers.get(role)
        if worker is None:
            raise KeyError(f"no {role!r} role in this client; it has {', '.join(self.roles)}")
        msg = _over_the_wire(msg)
        if isinstance(msg, m.Hello):
            reply = self._ready[role]
        elif isinstance(msg, m.Shutdown):
            return
        else:
            reply = handle_request(worker, msg)
        self._replies.put(Envelope(role, _over_the_wire(reply)))

    def recv(self, timeout: float) -> Envelope | None:
        try:
            return self._replies.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        for worker in self.workers.values():
            worker.close()


def _over_the_wire(msg: Any) -> Any:
    return m.decode(m.encode(msg))
