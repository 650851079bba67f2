"""Entry point of every role process: ``python -m constellation.runtime.process ROLE RUN_DIR``.

The lifecycle is the same for all roles:
  start -> setup (load models) -> READY -> serve -> drain on SIGTERM/Shutdown -> exit
and DEAD(reason) to the supervisor on a fatal error. A heartbeat thread sends
state, queue depth and the role's counters every ``heartbeat_interval``
seconds, also while the main thread is inside a long torch call.

A worker's loop is thin: receive, ``role.handle``, send. An exception inside
``handle`` becomes an ``Error`` reply for that request; the process goes on.

Every socket uses CURVE with the role's key pair from ``RUN_DIR/keys`` (made
by the supervisor): the hub and the lifecycle inbox know which role a
connection belongs to, and nobody without a key of this run gets in.

Watchdog: the coordinator's heartbeat carries ``loop_age``, seconds since its
request loop last turned (a huge value when the hub's I/O thread has
stopped), so the supervisor restarts a coordinator that is alive but stuck.
A coordinator started again by the supervisor (CONSTELLATION_RESTARTS > 0)
records a ``role_restart`` event; one started on a finished run reports
Finished at once and changes nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Union

from constellation.protocol import config
from constellation.protocol import events as ev
from constellation.protocol import messages as m
from constellation.protocol.transport import Link, client_keys, server_keys
from constellation.runtime import lifecycle
from constellation.runtime.client import ZmqRoleClient, handle_request
from constellation.runtime.registry import resolve_role, worker_roles
from constellation.runtime.store import finished_run

REANNOUNCE_SECONDS = 2.0  # an idle worker repeats its Ready this often
STUCK_LOOP_AGE = 1e9  # the loop_age reported when the hub's I/O thread has stopped

log = logging.getLogger("process")


class _Beat:
    """What the heartbeat thread reports."""

    def __init__(self) -> None:
        self.state = "starting"
        self.stats = lambda: {}


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _heartbeats(life: Link, role: str, beat: _Beat, link: list, interval: float, stop: threading.Event) -> None:
    while not stop.wait(interval):
        try:
            stats = {k: float(v) for k, v in beat.stats().items()}
        except Exception as e:  # a stats() bug must not kill the heartbeat
            stats = {"stats_error": 1.0}
            log.debug("stats() failed: %s", e)
        stats["peak_rss_mib"] = peak_rss_mib()
        depth = link[0].inbox.qsize() if link else 0
        life.send(m.Heartbeat(role=role, pid=os.getpid(), state=beat.state, queue_depth=depth, stats=stats))


def serve_worker(role: str, cfg: config.Config, run_dir: Path, endpoints: dict, life: Link,
                 beat: _Beat, link: list, stop: threading.Event) -> None:
    impl = getattr(cfg, role).impl
    cls = resolve_role(role, impl)
    worker = cls(cfg, run_dir)
    info = worker.setup() or {}
    beat.stats = worker.stats
    expected = Union[tuple(cls.accepts) + (m.Shutdown, m.Hello)]  # noqa: UP007 -- a runtime Union for msgspec
    hub = Link("dealer", endpoints["hub"], bind=False, identity=role, expected=expected,
               keys=client_keys(run_dir, role))
    link.append(hub)
    ready = m.Ready(role=role, pid=os.getpid(), impl=impl, info=info, launch=lifecycle.own_token())
    hub.send(ready)
    life.send(ready)
    beat.state = "idle"
    log.info("%s ready (impl %s): %s", role, impl, info)
    last_heard = time.monotonic()
    while not stop.is_set():
        env = hub.recv(timeout=0.2)
        if env is None:
            # idle: announce again now and then, so a restarted coordinator
            # learns this connection (with CURVE it routes by what it heard)
            if time.monotonic() - last_heard > REANNOUNCE_SECONDS:
                hub.send(ready)
                last_heard = time.monotonic()
            continue
        last_heard = time.monotonic()
        msg = env.msg
        if isinstance(msg, m.Shutdown):
            log.info("shutdown requested: %s", msg.reason)
            break
        if isinstance(msg, m.Hello):  # a (re)started coordinator asks who is there
            hub.send(ready)
            continue
        beat.state = "busy"
        reply = handle_request(worker, msg)
        hub.send(reply)
        beat.state = "idle"
    worker.close()
    hub.close()


def serve_coordinator(cfg: config.Config, run_dir: Path, endpoints: dict, life: Link, beat: _Beat,
                      link: list, stop: threading.Event) -> None:
    from constellation.runtime.coordinator import Coordinator, Interrupted
    from constellation.runtime.requests import RequestFailed

    roles = worker_roles(cfg)  # no critic process when critic.impl = "none"
    client = ZmqRoleClient(endpoints["hub"], roles, keys=server_keys(run_dir, list(roles)),
                           accept_ready=lifecycle.ready_check())
    link.append(client.link)
    coord = Coordinator(cfg, run_dir, client, stop)

    def stats() -> dict[str, float]:
        loop_age = time.monotonic() - coord.last_turn if client.link.alive else STUCK_LOOP_AGE
        return {"pending": len(coord.pending), "round": coord.current.round if coord.current else -1,
                "candidates": len(coord.current.candidates) if coord.current else 0, "loop_age": loop_age,
                "progress": coord.progress}

    beat.stats = stats
    life.send(m.Ready(role="coordinator", pid=os.getpid(), impl="coordinator", launch=lifecycle.own_token()))
    beat.state = "busy"
    ended = finished_run(run_dir)
    if ended is None and int(os.environ.get("CONSTELLATION_RESTARTS", "0")) > 0:
        coord.store.event(ev.RoleRestart(role="coordinator", pid=os.getpid(), resent=0))
    try:
        if ended is not None:
            log.info("%s holds a finished run (ok=%s): nothing to do", run_dir, ended.ok)
        ok = ended.ok if ended is not None else coord.run()
        summary = "the run had finished already" if ended is not None else ""
    except Interrupted:
        ok, summary = False, "interrupted"
    except RequestFailed as e:  # a request its role cannot complete: end the run, with why (no restart helps)
        log.error("the run cannot go on: %s", e)
        coord.store.event(ev.RunEnd(ok=False, counters=dict(coord.counters), reason=str(e)))
        ok, summary = False, str(e)
    finally:
        coord.close()
    for role in roles:
        client.send(role, m.Shutdown(reason="run finished"))
    life.send(m.Finished(ok=ok, summary=summary))
    client.close()


def quiet_kernel_lookup() -> None:
    """Importing bitsandbytes (peft does) looks for an optional CPU kernel on the
    Hugging Face kernel hub; offline the lookup fails and bitsandbytes runs its
    own CPU code. The warning is harmless (docs/real-model.md): silence it."""
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("role")
    ap.add_argument("run_dir", type=Path)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {args.role}[%(process)d] %(levelname)s %(name)s: %(message)s")
    quiet_kernel_lookup()
    cfg = config.load_file(args.run_dir / "config.toml")
    endpoints = json.loads((args.run_dir / "endpoints.json").read_text())
    life = Link("push", endpoints["lifecycle"], bind=False, keys=client_keys(args.run_dir, args.role))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    beat, link = _Beat(), []
    hb = threading.Thread(target=_heartbeats, daemon=True,
                          args=(life, args.role, beat, link, cfg.supervisor.heartbeat_interval, stop))
    hb.start()
    try:
        if args.role == "coordinator":
            serve_coordinator(cfg, args.run_dir, endpoints, life, beat, link, stop)
        else:
            serve_worker(args.role, cfg, args.run_dir, endpoints, life, beat, link, stop)
    except BaseException as e:
        reason = f"{type(e).__name__}: {e}"
        log.error("fatal: %s\n%s", reason, traceback.format_exc())
        life.send(m.Dead(role=args.role, pid=os.getpid(), reason=reason[:2000]))
        stop.set()
        life.close()
        return 1
    stop.set()
    life.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
