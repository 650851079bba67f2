"""The coordinator's request loop: requests by id, replies, re-sends, restarts.

Every request the coordinator sends carries an id and stays in ``pending``
until its reply arrives; the loop (``_pump``) is the coordinator's only
receive loop. What it guarantees:

  * A reply whose id is no longer pending (a duplicate after a re-send, or one
    addressed to a dead predecessor: ids embed the coordinator's pid and start
    time) is counted and ignored, never handled twice.
  * A reply is accepted only from the role its request was sent to (the
    envelope's peer, which the transport has checked against the peer's CURVE
    key); one from another peer is refused, counted and logged, and the
    request stays pending. A Ready is accepted only for the sender's own name.
  * An ``Error`` reply re-sends the request, up to MAX_ATTEMPTS Errors in all,
    then raises ``CoordinatorError`` naming the role and the message. Re-sends
    after a restart or a timeout are not attempts: the request did not fail.
  * A request is done only when its replies cover it (coverage.py): a reply
    that covers part of what it asked for is handled for that part and the
    request is re-sent for the rest; a reply holding anything it did not ask
    for, or nothing still missing, is refused (logged, counted) and the
    request re-sent. After MAX_BAD_REPLIES such replies to one request, or
    MAX_TIMEOUTS re-sends for silence, ``RequestFailed`` ends the run naming
    the role and the request: a run never waits on a reply that cannot come.
  * A request unanswered for ``request_timeout`` seconds is re-sent.
  * A role that announces Ready with a new pid was restarted and lost its
    in-flight work: ``_on_role_restart`` runs first (the coordinator restores
    the generator's adapter there), then its pending requests are re-sent in
    their original order.
  * ``last_turn`` is when the loop last turned: the role process reports its
    age in the heartbeat, so the supervisor restarts a stuck loop (watchdog).

Subclasses map reply types to handlers in ``_handlers`` and may hook
``_before_poll`` and ``_after_dispatch``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable

from constellation.protocol import messages as m
from constellation.runtime import coverage
from constellation.runtime.client import RoleClient

log = logging.getLogger("coordinator")

MAX_ATTEMPTS = 3
MAX_BAD_REPLIES = 5  # refused or partial replies to one request before the run ends
MAX_TIMEOUTS = 5  # re-sends of one request for silence before the run ends


class CoordinatorError(RuntimeError):
    pass


class RequestFailed(CoordinatorError):
    """A request that its role cannot complete: the run ends with this message."""


class Interrupted(Exception):
    pass


@dataclass
class Pending:
    role: str
    msg: Any
    sent_at: float
    attempts: int = 1  # 1 + the Error replies so far
    missing: set[str] | None = None  # item ids not covered by a reply yet (None: a one-off request)
    bad_replies: int = 0  # refused or partial replies so far
    timeouts: int = 0  # re-sends for silence so far


class RequestLoop:
    def __init__(self, client: RoleClient, stop: threading.Event, request_timeout: float) -> None:
        self.client, self.stop, self.request_timeout = client, stop, request_timeout
        self.pending: dict[str, Pending] = {}
        self.ready: set[str] = set()
        self.pids: dict[str, int] = {}  # role -> pid of the process that announced Ready
        self.role_info: dict[str, dict[str, Any]] = {}  # role -> the info of its latest Ready
        self._handlers: dict[type, Callable[[Any], None]] = {}
        self._replies: dict[str, Any] = {}  # request_id -> reply, for one-off requests
        self._unawaited: set[str] = set()  # requests whose reply nobody waits for
        self.counters: dict[str, int] = defaultdict(int)
        self._next_id = 0
        self._incarnation = f"{os.getpid()}.{int(time.time()) % 100000}"
        self.last_turn = time.monotonic()  # the watchdog's view of this loop
        self.progress = 0  # replies handled (whole or in part): the supervisor's progress watchdog reads it

    # hooks --------------------------------------------------------------
    def _before_poll(self) -> None:
        """Runs before each receive (the coordinator tops up generation here)."""

    def _after_dispatch(self) -> None:
        """Runs after each handled message."""

    def _on_role_restart(self, role: str, pid: int, resent: list[str]) -> None:
        """Runs when a restarted role is back, before its requests are re-sent."""

    # sending --------------------------------------------------------------
    def _rid(self, kind: str) -> str:
        """Unique across coordinator incarnations: a late reply addressed to a
        dead predecessor must never match a request of its successor."""
        self._next_id += 1
        return f"{kind}-{self._incarnation}-{self._next_id}"

    def _submit(self, role: str, msg: Any) -> None:
        asked = coverage.asked_ids(msg)
        self.pending[msg.request_id] = Pending(role, msg, time.monotonic(), missing=None if asked is None else set(asked))
        self.client.send(role, msg)

    def request(self, role: str, msg: Any) -> Any:
        """Send one request and serve messages until its reply arrives."""
        self._submit(role, msg)
        self._pump(lambda: msg.request_id in self._replies)
        return self._replies.pop(msg.request_id)

    # receiving ------------------------------------------------------------
    def _pump(self, done: Callable[[], bool]) -> None:
        """Serve messages until ``done()``: the coordinator's only loop."""
        while not done():
            self.last_turn = time.monotonic()
            if self.stop.is_set():
                raise Interrupted()
            self._before_poll()
            env = self.client.recv(0.5)
            if env is None:
                self._resend_timed_out()
                continue
            self._dispatch(env.peer, env.msg)
            self._after_dispatch()

    def _dispatch(self, peer: str | None, msg: Any) -> None:
        if isinstance(msg, m.Ready):
            if peer is not None and peer != msg.role:
                return self._refuse(peer, msg, f"a Ready for role {msg.role!r}")
            return self._on_ready(msg.role, msg)
        rid = getattr(msg, "request_id", "")
        pending = self.pending.get(rid)
        if pending is not None and peer is not None and peer != pending.role:
            return self._refuse(peer, msg, f"a reply to request {rid!r}, which went to {pending.role!r}")
        if pending is None:  # a duplicate after a re-send, or a decode error of ours
            self.counters["ignored_replies"] += 1
            log.warning("ignoring %s from %s for request %r (not pending)", type(msg).__name__, peer, rid)
            return
        if isinstance(msg, m.Error):
            self.pending.pop(rid)
            return self._on_error(pending, msg)
        handler = self._handlers.get(type(msg))
        checked = coverage.check(pending.msg, msg, pending.missing)
        if handler is None or checked.reply is None:
            return self._bad_reply(rid, pending, peer, msg, checked.reason or "no handler for it", partial=False)
        if pending.missing is not None:
            pending.missing -= checked.covered
        self.progress += 1
        if pending.missing:  # handle the part it covers, ask again for the rest
            handler(checked.reply)
            return self._bad_reply(rid, pending, peer, msg, f"{len(pending.missing)} of the "
                                   f"{len(coverage.asked_ids(pending.msg) or ())} items it asked for are missing",
                                   partial=True)
        self.pending.pop(rid)
        handler(checked.reply)

    def _bad_reply(self, rid: str, pending: Pending, peer: str | None, msg: Any, reason: str, partial: bool) -> None:
        """A reply that did not complete its request: count it, re-send the
        request (the whole of it: a role answers a request the same way each
        time, so the run's result does not depend on the attack), or end the
        run after MAX_BAD_REPLIES."""
        kind = "partial_replies" if partial else "refused_replies"
        self.counters[kind] += 1
        pending.bad_replies += 1
        log.warning("%s %s from %s for request %s: %s (%d of %d such replies)", "partial" if partial else "refused",
                    type(msg).__name__, peer, rid, reason, pending.bad_replies, MAX_BAD_REPLIES)
        if pending.bad_replies >= MAX_BAD_REPLIES:
            raise RequestFailed(f"{pending.role} could not complete request {rid} ({type(pending.msg).__name__}): "
                                f"{pending.bad_replies} replies did not cover it; the last: {reason}")
        pending.sent_at = time.monotonic()
        self.counters["resent"] += 1
        self.client.send(pending.role, pending.msg)

    def _refuse(self, peer: str, msg: Any, what: str) -> None:
        self.counters["refused_replies"] += 1
        log.warning("refused %s from %s: %s (refused so far: %d)", type(msg).__name__, peer, what,
                    self.counters["refused_replies"])

    def _on_reply(self, msg: Any) -> None:
        """Replies that a phase waits for by request id (see _request)."""
        if msg.request_id in self._unawaited:
            self._unawaited.discard(msg.request_id)
            return
        self._replies[msg.request_id] = msg

    def _on_ready(self, role: str, msg: m.Ready) -> None:
        previous = self.pids.get(role)
        self.ready.add(role)
        self.pids[role] = msg.pid
        self.role_info[role] = msg.info
        if previous is None:
            log.info("%s ready (pid %d, impl %s)", role, msg.pid, msg.impl)
            return
        if previous == msg.pid:  # the same process answering a Hello
            return
        # a restarted role: it lost its in-flight work
        mine = sorted((rid for rid, p in self.pending.items() if p.role == role), key=lambda r: int(r.split("-")[-1]))
        log.warning("%s restarted (pid %d): re-sending %d in-flight requests", role, msg.pid, len(mine))
        self.counters[f"restarts_{role}"] += 1
        self._on_role_restart(role, msg.pid, mine)
        for rid in mine:
            p = self.pending[rid]
            p.sent_at = time.monotonic()
            self.client.send(role, p.msg)
        self.counters["resent"] += len(mine)

    def _on_error(self, pending: Pending, err: m.Error) -> None:
        log.error("%s failed request %s (attempt %d): %s", pending.role, err.request_id, pending.attempts, err.message)
        if pending.attempts >= MAX_ATTEMPTS:
            raise RequestFailed(f"{pending.role} failed request {err.request_id} {pending.attempts} times: {err.message}")
        pending.attempts += 1
        pending.sent_at = time.monotonic()
        self.pending[err.request_id] = pending
        self.client.send(pending.role, pending.msg)

    def _resend_timed_out(self) -> None:
        now = time.monotonic()
        for rid, p in list(self.pending.items()):
            if now - p.sent_at > self.request_timeout:
                if p.timeouts >= MAX_TIMEOUTS:
                    raise RequestFailed(f"{p.role} did not answer request {rid} ({type(p.msg).__name__}) within "
                                        f"{self.request_timeout:g} s, {p.timeouts + 1} times")
                p.timeouts += 1
                log.warning("request %s to %s timed out; re-sending (%d of %d)", rid, p.role, p.timeouts, MAX_TIMEOUTS)
                p.sent_at = now
                self.counters["timeouts"] += 1
                self.client.send(p.role, p.msg)

    def wait_for_workers(self) -> None:
        """Workers announce Ready when they start; a restarted coordinator
        missed that, so it asks (Hello) every second until all have answered."""
        log.info("waiting for workers: %s", ", ".join(self.client.roles))
        last_hello = 0.0
        while not self.ready >= set(self.client.roles):
            self.last_turn = time.monotonic()
            if self.stop.is_set():
                raise Interrupted()
            if time.monotonic() - last_hello > 1.0:
                for role in set(self.client.roles) - self.ready:
                    self.client.send(role, m.Hello())
                last_hello = time.monotonic()
            env = self.client.recv(0.2)
            if env is not None:
                self._dispatch(env.peer, env.msg)
