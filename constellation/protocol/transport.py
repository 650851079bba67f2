"""ZeroMQ transport behind one small class.

A ``Link`` owns one zmq socket and a background I/O thread. The thread only
moves frames: it decodes incoming frames into messages and queues them, and it
sends what the owner queued. The owner's loop only sees queues, so a role busy
in a long torch call never blocks its socket (heartbeats keep flowing), and
role code never touches zmq.

Socket kinds used by constellation:
  router  -- the coordinator's hub; peers are addressed by their identity
  dealer  -- a worker role's connection to the hub (identity = role name)
  pull    -- the supervisor's lifecycle inbox (Ready, Heartbeat, Dead, Finished)
  push    -- a role's connection to that inbox

A frame that does not decode is logged and, where the socket can reply
(router/dealer), answered with an ``Error`` message; the link goes on.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import uuid
from typing import Any, NamedTuple

import zmq

from constellation.protocol import messages as m

log = logging.getLogger(__name__)


class TransportError(RuntimeError):
    pass


class Envelope(NamedTuple):
    peer: str | None  # sender identity (router only), else None
    msg: Any


_KINDS = {"router": zmq.ROUTER, "dealer": zmq.DEALER, "pull": zmq.PULL, "push": zmq.PUSH}


def free_tcp_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


class Link:
    def __init__(self, kind: str, endpoint: str, *, bind: bool, identity: str | None = None,
                 expected: Any = m.Message) -> None:
        if kind not in _KINDS:
            raise TransportError(f"unknown socket kind {kind!r}; known: {sorted(_KINDS)}")
        self.kind, self.endpoint, self.expected = kind, endpoint, expected
        self.inbox: queue.Queue[Envelope] = queue.Queue()
        self._outbox: queue.Queue[tuple[str | None, list[bytes]]] = queue.Queue()
        self._ctx = zmq.Context.instance()
        self._wake_addr = f"inproc://wake-{uuid.uuid4().hex}"
        self._wake_rx = self._ctx.socket(zmq.PULL)
        self._wake_rx.bind(self._wake_addr)
        self._wake_tx = self._ctx.socket(zmq.PUSH)
        self._wake_tx.connect(self._wake_addr)
        self._wake_lock = threading.Lock()
        self._sock = self._ctx.socket(_KINDS[kind])
        self._sock.setsockopt(zmq.LINGER, 1000)
        if identity is not None:
            self._sock.setsockopt(zmq.IDENTITY, identity.encode())
        if kind == "router":
            # report a send to an unknown peer instead of dropping it silently,
            # and let a restarted role reclaim its identity from the dead one
            self._sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            self._sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        try:
            self._sock.bind(endpoint) if bind else self._sock.connect(endpoint)
        except zmq.ZMQError as e:
            self._sock.close(0)
            raise TransportError(f"cannot {'bind' if bind else 'connect'} {kind} socket at {endpoint}: {e}") from e
        self.decode_errors = 0
        self.unroutable = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._io_loop, name=f"link-{kind}", daemon=True)
        self._thread.start()

    # -- owner side -------------------------------------------------------
    def send(self, msg: Any, peer: str | None = None) -> None:
        if self.kind == "router" and peer is None:
            raise TransportError("a router link needs a peer to send to")
        self._outbox.put((peer, m.encode(msg)))
        with self._wake_lock:  # the wake socket is shared by sender threads
            self._wake_tx.send(b"", zmq.NOBLOCK)

    def recv(self, timeout: float | None = None) -> Envelope | None:
        """Next decoded message, or None after ``timeout`` seconds."""
        try:
            return self.inbox.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._stop.set()
        with self._wake_lock:
            self._wake_tx.send(b"", zmq.NOBLOCK)
        self._thread.join(timeout=5)
        self._wake_tx.close(0)

    # -- I/O thread -------------------------------------------------------
    def _io_loop(self) -> None:
        poller = zmq.Poller()
        readable = self.kind in ("router", "dealer", "pull")
        if readable:
            poller.register(self._sock, zmq.POLLIN)
        poller.register(self._wake_rx, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(500))
                if self._wake_rx in events:
                    while self._wake_rx.poll(0):
                        self._wake_rx.recv()
                self._flush_outbox()
                if readable and self._sock in events:
                    while self._sock.poll(0):
                        self._receive_one()
            self._flush_outbox()
        except zmq.ZMQError as e:  # context terminated at process exit
            log.warning("link %s %s stopped: %s", self.kind, self.endpoint, e)
        finally:
            self._sock.close()
            self._wake_rx.close(0)

    def _flush_outbox(self) -> None:
        while True:
            try:
                peer, frames = self._outbox.get_nowait()
            except queue.Empty:
                return
            try:
                if self.kind == "router":
                    self._sock.send_multipart([peer.encode(), *frames])
                else:
                    self._sock.send_multipart(frames)
            except zmq.ZMQError as e:
                # EHOSTUNREACH: the peer is not connected (starting, or dead).
                # Requests stay pending at the coordinator and are re-sent when
                # the peer announces Ready, so this is not an error here.
                self.unroutable += 1
                level = logging.DEBUG if e.errno == zmq.EHOSTUNREACH else logging.WARNING
                log.log(level, "send to %s on %s failed: %s", peer, self.endpoint, e)

    def _receive_one(self) -> None:
        frames = self._sock.recv_multipart()
        peer = None
        if self.kind == "router":
            peer, frames = frames[0].decode(errors="replace"), frames[1:]
        try:
            msg = m.decode(frames, self.expected)
        except m.DecodeError as e:
            self.decode_errors += 1
            log.error("rejected frame from %s on %s: %s", peer or "peer", self.endpoint, e)
            if self.kind in ("router", "dealer"):
                reply = m.encode(m.Error(request_id="", error_kind="decode", message=str(e)))
                self._sock.send_multipart([peer.encode(), *reply] if peer else reply)
            return
        self.inbox.put(Envelope(peer, msg))


def ipc_endpoint(run_dir: str, name: str) -> str:
    """An ipc:// endpoint inside the run directory, or under /tmp when the
    path would exceed the ~107-byte limit of a unix socket path."""
    path = os.path.join(os.path.abspath(run_dir), "sock", name)
    if len(path) > 100:
        short = os.path.join("/tmp", f"cst-{uuid.uuid5(uuid.NAMESPACE_URL, path).hex[:12]}")
        os.makedirs(short, exist_ok=True)
        path = os.path.join(short, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return f"ipc://{path}"
