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

Nothing that arrives is trusted (docs/security.md), and the I/O thread never
stops on a frame:
  * a frame over MAX_FRAME_BYTES drops its connection (zmq enforces it); a
    payload nested deeper than the decoder allows, or any other that does not
    decode, is answered with an ``Error`` where the socket can reply, else
    dropped;
  * a router peer's name: without CURVE, its identity, which must be short
    printable UTF-8; with CURVE, the name its key is bound to (``Keys``, the
    ZAP handler below), whatever identity it sets. With CURVE a dealer sets no
    identity, zmq gives each connection its own, and the router routes a name
    to the connection that last announced itself with a Ready for that name:
    a peer cannot squat a role's name by connecting first under it. A frame
    failing these checks is dropped and counted in ``refused``;
  * sends never block: a router drops what an absent or full peer (one that
    does not read) cannot take, a dealer or push keeps a bounded backlog.

CURVE: a server (bind) link admits only the public keys in its ``Keys.clients``
and binds each key to one name; a client link proves its key. Binding or
connecting to a tcp address off this host without keys is refused.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import socket
import stat
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

import zmq
import zmq.utils.z85

from constellation.protocol import messages as m

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 256 << 20  # a bigger frame (of any peer) drops its connection
MAX_IDENTITY_BYTES = 64  # a router peer's name: a role name, never longer
HWM = 1000  # messages queued per peer in zmq before a router drops and a dealer backs up
MAX_INBOX = 100_000  # decoded messages waiting for the owner; beyond, new ones are dropped
MAX_BACKLOG = 10_000  # dealer/push messages waiting for their peer; beyond, the oldest are dropped
RECV_BURST = 256  # frames read per turn of the I/O loop before the outbox gets its turn
LOOPBACK = ("127.", "localhost", "[::1]", "::1")


class TransportError(RuntimeError):
    pass


class Envelope(NamedTuple):
    peer: str | None  # sender identity (router only), else None
    msg: Any
    user: str | None = None  # the name the sender's CURVE key is bound to (server links with keys)


_KINDS = {"router": zmq.ROUTER, "dealer": zmq.DEALER, "pull": zmq.PULL, "push": zmq.PUSH}


@dataclass(frozen=True)
class Keys:
    """CURVE keys of one link (z85 text, 40 bytes each). A server has its own
    pair and ``clients``: admitted public key -> the one name it may use. A
    client has its own pair and ``server``, the server's public key."""

    public: bytes
    secret: bytes
    server: bytes = b""
    clients: Mapping[bytes, str] = field(default_factory=dict)


def free_tcp_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def is_local(endpoint: str) -> bool:
    """ipc:// and inproc:// stay on this host; tcp:// only on a loopback address."""
    if not endpoint.startswith("tcp://"):
        return True
    host = endpoint.removeprefix("tcp://").rsplit(":", 1)[0]
    return host.startswith(LOOPBACK)


class Link:
    def __init__(self, kind: str, endpoint: str, *, bind: bool, identity: str | None = None,
                 expected: Any = m.Message, keys: Keys | None = None,
                 accept_ready: Callable[[Any], bool] | None = None) -> None:
        """``accept_ready`` (a router): a Ready it rejects is refused, never routed or delivered."""
        if kind not in _KINDS:
            raise TransportError(f"unknown socket kind {kind!r}; known: {sorted(_KINDS)}")
        if keys is None and not is_local(endpoint):
            raise TransportError(f"refusing to {'bind' if bind else 'connect'} {endpoint} without CURVE keys: "
                                 f"only loopback and ipc:// endpoints may go unauthenticated")
        self.kind, self.endpoint, self.expected, self.curve = kind, endpoint, expected, keys is not None
        self.accept_ready = accept_ready
        self.inbox: queue.Queue[Envelope] = queue.Queue(MAX_INBOX)
        self._outbox: queue.Queue[tuple[str | None, list[bytes]]] = queue.Queue()
        self._backlog: collections.deque[tuple[str | None, list[bytes]]] = collections.deque()
        self._ctx = zmq.Context.instance()
        self._wake_addr = f"inproc://wake-{uuid.uuid4().hex}"
        self._wake_rx = self._ctx.socket(zmq.PULL)
        self._wake_rx.bind(self._wake_addr)
        self._wake_tx = self._ctx.socket(zmq.PUSH)
        self._wake_tx.connect(self._wake_addr)
        self._wake_lock = threading.Lock()
        self._sock = self._socket(kind, bind, identity, keys)
        try:
            self._sock.bind(endpoint) if bind else self._sock.connect(endpoint)
        except zmq.ZMQError as e:
            self._sock.close(0)
            raise TransportError(f"cannot {'bind' if bind else 'connect'} {kind} socket at {endpoint}: {e}") from e
        # counters: frames that did not decode, were refused (identity/key), or were dropped (full queues)
        self.decode_errors = self.refused = self.dropped = self.unroutable = self.io_errors = 0
        self._routes: dict[str, bytes] = {}  # router with CURVE: name -> zmq identity of its connection
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._io_loop, name=f"link-{kind}", daemon=True)
        self._thread.start()

    def _socket(self, kind: str, bind: bool, identity: str | None, keys: Keys | None) -> zmq.Socket:
        sock = self._ctx.socket(_KINDS[kind])
        sock.setsockopt(zmq.LINGER, 1000)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        sock.setsockopt(zmq.SNDHWM, HWM)
        sock.setsockopt(zmq.RCVHWM, HWM)
        if identity is not None and keys is None:  # with CURVE the key names the peer
            sock.setsockopt(zmq.IDENTITY, identity.encode())
        if kind == "router":
            # report a send to an unknown peer instead of dropping it silently.
            # No ROUTER_HANDOVER: a newcomer cannot take a live role's name; a
            # restarted role gets it once the dead one's connection is gone.
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        if keys is not None and bind:
            domain = f"cst-{uuid.uuid4().hex}"
            _ZapHandler.get(self._ctx).admit(domain, keys.clients, endpoint=self.endpoint)
            sock.setsockopt(zmq.ZAP_DOMAIN, domain.encode())
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
        elif keys is not None:
            sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
            sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
            sock.setsockopt(zmq.CURVE_SERVERKEY, keys.server)
        return sock

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

    @property
    def alive(self) -> bool:
        """The I/O thread is running (it stops only on close or process exit)."""
        return self._thread.is_alive()

    def close(self) -> None:
        self._stop.set()
        with self._wake_lock:
            self._wake_tx.send(b"", zmq.NOBLOCK)
        self._thread.join(timeout=5)
        self._wake_tx.close(0)

    # -- I/O thread -------------------------------------------------------
    def _io_loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._wake_rx, zmq.POLLIN)
        readable = zmq.POLLIN if self.kind in ("router", "dealer", "pull") else 0
        try:
            while not self._stop.is_set():
                flags = readable | (zmq.POLLOUT if self._backlog else 0)
                poller.register(self._sock, flags)  # flags 0 unregisters it
                events = dict(poller.poll(500))
                try:
                    self._turn(events)
                except zmq.ZMQError as e:
                    if e.errno in (zmq.ETERM, zmq.ENOTSOCK):
                        raise
                    self._count_io_error(e)
                except Exception as e:  # a bug here must not stop the link
                    self._count_io_error(e)
            self._flush()
        except zmq.ZMQError as e:  # context terminated at process exit
            log.warning("link %s %s stopped: %s", self.kind, self.endpoint, e)
        finally:
            self._sock.close()
            self._wake_rx.close(0)

    def _turn(self, events: dict) -> None:
        if self._wake_rx in events:
            while self._wake_rx.poll(0):
                self._wake_rx.recv()
        self._flush()
        if self._sock in events and events[self._sock] & zmq.POLLIN:
            for _ in range(RECV_BURST):
                try:
                    frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                self._receive_one(frames)

    def _count_io_error(self, e: Exception) -> None:
        self.io_errors += 1
        if _worth_logging(self.io_errors):
            log.error("link %s %s: %s: %s (%d so far); going on", self.kind, self.endpoint,
                      type(e).__name__, e, self.io_errors)

    def _flush(self) -> None:
        """Outbox -> socket without blocking. A router drops what a peer cannot
        take now (absent: EHOSTUNREACH; not reading: EAGAIN); the coordinator
        re-sends pending requests, so nothing is lost. A dealer/push keeps the
        rest in order for the next POLLOUT."""
        while True:
            try:
                self._backlog.append(self._outbox.get_nowait())
            except queue.Empty:
                break
        while len(self._backlog) > MAX_BACKLOG:
            self._backlog.popleft()
            self.dropped += 1
        while self._backlog:
            peer, frames = self._backlog[0]
            try:
                if self.kind == "router":
                    frames = [self._routes.get(peer, b"") if self.curve else peer.encode(), *frames]
                self._sock.send_multipart(frames, zmq.NOBLOCK)
            except zmq.ZMQError as e:
                if self.kind != "router" and e.errno == zmq.EAGAIN:
                    return  # the peer is busy or not connected yet: retry on POLLOUT
                self.unroutable += 1
                level = logging.DEBUG if e.errno == zmq.EHOSTUNREACH else logging.WARNING
                log.log(level, "send to %s on %s failed: %s", peer, self.endpoint, e)
            self._backlog.popleft()

    def _receive_one(self, parts: list[zmq.Frame]) -> None:
        frames = [p.bytes for p in parts]
        user = _user_id(parts[-1]) if self.curve else None
        peer, raw = None, None
        if self.kind == "router":
            raw, frames = frames[0], frames[1:]
            peer = user if self.curve else _peer_name(raw)
            if peer is None:
                return self._refuse(raw, "an identity that is not a short printable UTF-8 name")
        try:
            msg = _decode(frames, self.expected)
        except m.DecodeError as e:
            self.decode_errors += 1
            if _worth_logging(self.decode_errors):
                log.error("rejected frame from %s on %s: %s", peer or user or "peer", self.endpoint, e)
            if self.kind in ("router", "dealer"):
                self._reply_error(raw, str(e)[:500])
            return
        if self.kind == "router" and isinstance(msg, m.Ready) and self.accept_ready and not self.accept_ready(msg):
            return self._refuse(raw, f"a Ready for {msg.role!r} without the token of a process the supervisor started")
        if self.curve and peer is not None and not self._route(peer, raw, msg):
            return self._refuse(raw, f"a second connection of {peer!r}, which has not announced itself")
        try:
            self.inbox.put_nowait(Envelope(peer, msg, user))
        except queue.Full:
            self.dropped += 1
            if _worth_logging(self.dropped):
                log.error("inbox of %s full (%d messages): dropped one from %s", self.endpoint, MAX_INBOX, peer)

    def _route(self, name: str, raw: bytes, msg: Any) -> bool:
        """Router with CURVE: may this connection speak for ``name``? Its first
        connection may; a later one only from its Ready for that name on (a
        restarted role), which then takes the route."""
        current = self._routes.get(name)
        if current is None or current == raw or (isinstance(msg, m.Ready) and msg.role == name):
            self._routes[name] = raw
            return True
        return False

    def _refuse(self, raw: bytes, why: str) -> None:
        self.refused += 1
        if _worth_logging(self.refused):
            log.warning("refused a frame on %s from identity %r: %s (%d refused)", self.endpoint, raw[:80], why,
                        self.refused)

    def _reply_error(self, raw: bytes | None, text: str) -> None:
        reply = m.encode(m.Error(request_id="", error_kind="decode", message=text))
        try:
            self._sock.send_multipart([raw, *reply] if raw is not None else reply, zmq.NOBLOCK)
        except zmq.ZMQError:  # a peer that does not read its errors gets no more of them
            self.dropped += 1


def _decode(frames: list[bytes], expected: Any) -> Any:
    """``messages.decode`` with every failure as DecodeError: too deep a
    nesting raises RecursionError inside msgspec, which must not escape."""
    try:
        return m.decode(frames, expected)
    except m.DecodeError:
        raise
    except RecursionError as e:
        raise m.DecodeError(f"payload nested deeper than the decoder allows ({sum(map(len, frames))} bytes)") from e
    except Exception as e:
        raise m.DecodeError(f"undecodable payload: {type(e).__name__}: {e}") from e


def _peer_name(raw: bytes) -> str | None:
    """A router peer's identity as a name, or None: zmq's generated identities
    (a 0 byte first), empty, too long, not UTF-8 or not printable."""
    if not raw or len(raw) > MAX_IDENTITY_BYTES or raw[0] == 0:
        return None
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return name if name.isprintable() else None


def _user_id(frame: zmq.Frame) -> str | None:
    try:
        return frame.get("User-Id")
    except zmq.ZMQError:  # no ZAP user on this connection
        return None


def _worth_logging(n: int) -> bool:
    """Log the first 10 of a kind, then every 1000th: a flood must not become a log flood."""
    return n <= 10 or n % 1000 == 0


class _ZapHandler:
    """The process's ZAP handler (ZeroMQ RFC 27): one thread on the shared
    context. It admits a CURVE client whose public key a server link listed for
    its domain and gives zmq the name that key is bound to, which every frame
    of the connection then carries as its User-Id. Anything else gets 400 and
    a logged refusal; a malformed request gets 500. The handler must be bound
    before a CURVE server binds: without one, zmq admits every key."""

    _lock = threading.Lock()
    _instance: _ZapHandler | None = None

    @classmethod
    def get(cls, ctx: zmq.Context) -> _ZapHandler:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls(ctx)
            return cls._instance

    def __init__(self, ctx: zmq.Context) -> None:
        self.domains: dict[bytes, tuple[dict[bytes, str], str]] = {}  # domain -> ({public key: name}, endpoint)
        self.refused = 0
        self._sock = ctx.socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind("inproc://zeromq.zap.01")
        threading.Thread(target=self._serve, name="zap", daemon=True).start()

    def admit(self, domain: str, clients: Mapping[bytes, str], endpoint: str) -> None:
        raw = {zmq.utils.z85.decode(k): name for k, name in clients.items()}
        self.domains[domain.encode()] = (raw, endpoint)

    def _serve(self) -> None:
        try:
            while True:
                request = self._sock.recv_multipart()
                self._sock.send_multipart(self._answer(request))
        except zmq.ZMQError:  # the context is terminating at process exit
            self._sock.close(0)

    def _answer(self, request: list[bytes]) -> list[bytes]:
        """[version, request id, domain, address, identity, mechanism, key]
        -> [version, request id, status, status text, user id, metadata]."""
        if len(request) < 6:
            return [b"1.0", b"", b"500", b"malformed ZAP request", b"", b""]
        version, request_id, domain, address, _identity, mechanism, *credentials = request
        clients, endpoint = self.domains.get(domain, ({}, "?"))
        name = clients.get(credentials[0]) if mechanism == b"CURVE" and credentials else None
        if name is None:
            self.refused += 1
            if _worth_logging(self.refused):
                log.warning("refused a %s client from %s on %s: its key is not one of this run's (%d refused)",
                            mechanism.decode(errors="replace"), address.decode(errors="replace"), endpoint,
                            self.refused)
            return [version, request_id, b"400", b"unknown key", b"", b""]
        return [version, request_id, b"200", b"OK", name.encode(), b""]


# -- key files and ipc paths ---------------------------------------------------
def make_run_keys(run_dir: str | Path, names: list[str]) -> None:
    """A fresh server key pair and one pair per name in ``RUN_DIR/keys``
    (directory 0700, files 0600, z85: public line, secret line)."""
    folder = private_dir(Path(run_dir) / "keys")
    for name in ("server", *names):
        public, secret = zmq.curve_keypair()
        tmp = folder / f"{name}.key.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(public + b"\n" + secret + b"\n")
        tmp.replace(folder / f"{name}.key")


def _key_pair(run_dir: str | Path, name: str) -> tuple[bytes, bytes]:
    path = Path(run_dir) / "keys" / f"{name}.key"
    try:
        public, secret = path.read_bytes().split()
    except (OSError, ValueError) as e:
        raise TransportError(f"cannot read the CURVE key pair {path}: {e}") from e
    return public, secret


def server_keys(run_dir: str | Path, clients: list[str]) -> Keys:
    """The run's server pair, admitting the keys of ``clients`` (role names)."""
    public, secret = _key_pair(run_dir, "server")
    return Keys(public, secret, clients={_key_pair(run_dir, n)[0]: n for n in clients})


def client_keys(run_dir: str | Path, name: str) -> Keys:
    public, secret = _key_pair(run_dir, name)
    return Keys(public, secret, server=_key_pair(run_dir, "server")[0])


def private_dir(path: Path) -> Path:
    """``path`` as a directory only this user can enter (0700); one that
    another user owns is refused."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.getuid():
        raise TransportError(f"{path} belongs to uid {st.st_uid}, not to this user ({os.getuid()})")
    if stat.S_IMODE(st.st_mode) != 0o700:
        path.chmod(0o700)
    return path


def ipc_endpoint(run_dir: str, name: str) -> str:
    """An ipc:// endpoint in a 0700 directory inside the run directory, or
    under /tmp when the path would exceed the ~107-byte limit of a unix socket path."""
    path = os.path.join(os.path.abspath(run_dir), "sock", name)
    if len(path) > 100:
        path = os.path.join("/tmp", f"cst-{uuid.uuid5(uuid.NAMESPACE_URL, path).hex[:12]}", name)
    private_dir(Path(path).parent)
    return f"ipc://{path}"
