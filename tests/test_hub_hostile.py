"""Hostile input against a live hub (a router ``Link`` on real sockets).

Each test sends one class of hostile input that wedged the coordinator's I/O
thread before the transport was hardened, then checks the hub still serves an
honest peer: it receives the peer's message and the peer gets the hub's reply.
"""

import random
import socket
import time

import pytest
import zmq

from constellation.protocol import messages as m
from constellation.protocol.transport import Link, free_tcp_endpoint, ipc_endpoint


@pytest.fixture(params=["ipc", "tcp"])
def endpoint(request, tmp_path):
    return ipc_endpoint(str(tmp_path), "hub") if request.param == "ipc" else free_tcp_endpoint()


@pytest.fixture
def hub(endpoint):
    link = Link("router", endpoint, bind=True)
    yield link
    link.close()


def raw_dealer(endpoint, identity=None, rcvhwm=None):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity)
    if rcvhwm is not None:
        sock.setsockopt(zmq.RCVHWM, rcvhwm)
    sock.connect(endpoint)
    return sock


def assert_hub_serves(hub, endpoint, name="honest"):
    """An honest dealer's Ready reaches the hub and the hub's reply reaches it."""
    honest = Link("dealer", endpoint, bind=False, identity=name)
    try:
        honest.send(m.Ready(role=name, pid=1, impl="x"))
        deadline = time.monotonic() + 10
        while True:
            env = hub.recv(max(0.0, deadline - time.monotonic()))
            assert env is not None, "the hub no longer receives"
            if env.peer == name and isinstance(env.msg, m.Ready):
                break
        hub.send(m.Shutdown(reason="still here"), peer=name)
        reply = honest.recv(10)
        assert reply is not None and reply.msg == m.Shutdown(reason="still here"), "the hub no longer sends"
    finally:
        honest.close()


def test_an_identity_that_is_not_utf8_is_dropped(hub, endpoint):
    rogue = raw_dealer(endpoint, identity=b"\xff\xfe\x80verifier")
    try:
        rogue.send_multipart([m.HEADER, b"\xc1 junk"])
        rogue.send_multipart(m.encode(m.Ready(role="verifier", pid=9, impl="x")))
        assert_hub_serves(hub, endpoint)
    finally:
        rogue.close(0)


def test_deeply_nested_msgpack_becomes_a_decode_error(hub, endpoint):
    deep = (b"\x84\xa4kind\xa5ready\xa4role\xa1x\xa3pid\x01\xa4info\x81\xa1a" + b"\x91" * 100_000 + b"\xc0")
    rogue = raw_dealer(endpoint, identity=b"rogue")
    try:
        rogue.send_multipart([m.HEADER, deep])
        assert rogue.poll(5000), "no Error reply to a deeply nested frame"
        reply = m.decode(rogue.recv_multipart())
        assert isinstance(reply, m.Error) and reply.error_kind == "decode"
        assert_hub_serves(hub, endpoint)
    finally:
        rogue.close(0)


def test_a_flood_that_never_reads_its_error_replies_does_not_block_the_hub(hub, endpoint):
    rogue = raw_dealer(endpoint, identity=b"flooder", rcvhwm=10)
    try:
        sent, deadline = 0, time.monotonic() + 20
        while sent < 20_000 and time.monotonic() < deadline:
            try:
                rogue.send_multipart([m.HEADER, b"\xc1"], zmq.NOBLOCK)
                sent += 1
            except zmq.Again:  # the hub reads slower than we write: wait for it
                time.sleep(0.001)
        assert sent == 20_000, f"the hub stopped reading after {sent} frames"
        assert_hub_serves(hub, endpoint)
    finally:
        rogue.close(0)


def test_random_bytes_on_the_tcp_port_do_no_harm():
    endpoint = free_tcp_endpoint()
    hub = Link("router", endpoint, bind=True)
    host, port = endpoint.removeprefix("tcp://").split(":")
    rng = random.Random(11)
    try:
        for i in range(200):
            with socket.create_connection((host, int(port))) as s:
                # half raw noise, half a ZMTP/1.0-style greeting (length byte,
                # then an identity that is not UTF-8) followed by noise
                head = bytes([8]) + bytes(rng.randrange(128, 256) for _ in range(8)) if i % 2 else b""
                s.sendall(head + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4096))))
        assert_hub_serves(hub, endpoint)
    finally:
        hub.close()


def hostile_frames(rng):
    """One multipart message of a hostile class, chosen by ``rng``."""
    deep = b"\x84\xa4kind\xa5ready\xa4role\xa1x\xa3pid\x01\xa4info\x81\xa1a" + b"\x91" * rng.randrange(100, 5000) + b"\xc0"
    ready = m.encode(m.Ready(role="x" * rng.randrange(1, 50), pid=rng.randrange(2**31), impl="y"))
    noise = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))
    return rng.choice([
        [m.HEADER, deep],  # nesting past the decoder's limit
        [m.HEADER, noise],  # not MessagePack
        [noise, ready[1]],  # unknown header
        [m.HEADER],  # too few frames
        [m.HEADER, ready[1], noise],  # too many frames
        [m.HEADER, ready[1][: rng.randrange(len(ready[1]))]],  # cut short
        m.encode(m.Verdicts(request_id="verify-1", items=[])),  # well-formed, never asked for
        [m.HEADER, b"\x81\xa4kind\xa9candidates"],  # a known kind without its fields
    ])


def test_fuzz_ten_thousand_hostile_frames_leave_the_hub_responsive(hub, endpoint):
    rng = random.Random(2024)
    identities = [b"\xff\xfe", None, b"x" * 200, "ünï".encode(), b"rogue", b"verifier", b"\xc3\x28bad"]
    rogues = [raw_dealer(endpoint, identity=i, rcvhwm=5) for i in identities]
    sent = 0
    try:
        for batch in range(12):
            for _ in range(1000):
                try:
                    rng.choice(rogues).send_multipart(hostile_frames(rng), zmq.NOBLOCK)
                    sent += 1
                except zmq.Again:
                    time.sleep(0.001)
            assert_hub_serves(hub, endpoint, name=f"honest-{batch}")
        assert sent >= 10_000
        while hub.recv(0) is not None:  # well-formed frames from named rogues are delivered, then ignored upstream
            pass
        assert hub.io_errors == 0 and hub.alive
    finally:
        for r in rogues:
            r.close(0)
