"""The transport over real sockets: ipc:// in a temp dir and tcp on 127.0.0.1."""

import time

import pytest
import zmq

from constellation.protocol import messages as m
from constellation.protocol.transport import Link, free_tcp_endpoint, ipc_endpoint


@pytest.fixture(params=["ipc", "tcp"])
def endpoint(request, tmp_path):
    return ipc_endpoint(str(tmp_path), "hub") if request.param == "ipc" else free_tcp_endpoint()


def _recv(link, timeout=20.0):  # generous: only a failing test waits it out (CI machines are loaded)
    env = link.recv(timeout)
    assert env is not None, "timed out waiting for a message"
    return env


def test_router_dealer_request_reply(endpoint):
    hub = Link("router", endpoint, bind=True)
    worker = Link("dealer", endpoint, bind=False, identity="verifier")
    try:
        worker.send(m.Ready(role="verifier", pid=1, impl="dsl"))
        env = _recv(hub)
        assert env.peer == "verifier" and isinstance(env.msg, m.Ready)
        hub.send(m.Shutdown(reason="done"), peer="verifier")
        assert _recv(worker).msg == m.Shutdown(reason="done")
    finally:
        worker.close(), hub.close()


def test_push_pull_lifecycle(endpoint):
    inbox = Link("pull", endpoint, bind=True)
    role = Link("push", endpoint, bind=False)
    try:
        for i in range(50):
            role.send(m.Heartbeat(role="critic", pid=7, state="idle", queue_depth=i))
        depths = [_recv(inbox).msg.queue_depth for _ in range(50)]
        assert depths == list(range(50))
    finally:
        role.close(), inbox.close()


def test_malformed_frame_gets_error_reply_and_link_goes_on(endpoint):
    hub = Link("router", endpoint, bind=True)
    raw = zmq.Context.instance().socket(zmq.DEALER)
    raw.setsockopt(zmq.IDENTITY, b"rogue")
    raw.connect(endpoint)
    try:
        raw.send_multipart([m.HEADER, b"\xc1 not msgpack"])
        assert raw.poll(20000), "no error reply"
        reply = m.decode(raw.recv_multipart())
        assert isinstance(reply, m.Error) and reply.error_kind == "decode"
        # the hub still works for a well-formed message afterwards
        raw.send_multipart(m.encode(m.Ready(role="rogue", pid=2, impl="x")))
        env = _recv(hub)
        assert env.peer == "rogue" and isinstance(env.msg, m.Ready)
        assert hub.decode_errors == 1
    finally:
        raw.close(0), hub.close()


def test_send_does_not_wait_for_a_busy_owner(endpoint):
    """The I/O thread sends while the owner never calls recv."""
    hub = Link("router", endpoint, bind=True)
    worker = Link("dealer", endpoint, bind=False, identity="gen")
    try:
        worker.send(m.Heartbeat(role="gen", pid=1, state="busy"))
        t0 = time.monotonic()
        assert _recv(hub).msg.state == "busy"
        assert time.monotonic() - t0 < 2.0
    finally:
        worker.close(), hub.close()


def test_long_run_dir_falls_back_to_short_ipc_path(tmp_path):
    deep = tmp_path / ("x" * 120)
    ep = ipc_endpoint(str(deep), "hub")
    assert len(ep) < 110 and ep.startswith("ipc:///tmp/cst-")
