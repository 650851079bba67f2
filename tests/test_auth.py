"""CURVE authentication and role identity on live sockets (ipc and tcp)."""

import os
import stat
import subprocess
import sys
import time

import pytest
import zmq

from constellation.protocol import config as config_mod
from constellation.protocol import messages as m
from constellation.protocol.transport import (Keys, Link, TransportError, client_keys, free_tcp_endpoint,
                                              ipc_endpoint, make_run_keys, server_keys)
from constellation.runtime.client import ZmqRoleClient

ROLES = ["coordinator", "generator", "verifier", "critic", "trainer"]


@pytest.fixture(params=["ipc", "tcp"])
def endpoint(request, tmp_path):
    return ipc_endpoint(str(tmp_path), "hub") if request.param == "ipc" else free_tcp_endpoint()


@pytest.fixture
def run_dir(tmp_path):
    make_run_keys(tmp_path, ROLES)
    return tmp_path


def quiet(link, seconds=1.5):
    """Nothing arrives on ``link`` for ``seconds``."""
    return link.recv(seconds) is None


def test_key_files_are_private(run_dir):
    assert stat.S_IMODE((run_dir / "keys").stat().st_mode) == 0o700
    for path in (run_dir / "keys").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_the_run_key_admits_a_role_under_its_own_name(run_dir, endpoint):
    hub = ZmqRoleClient(endpoint, ("verifier",), keys=server_keys(run_dir, ["verifier"]))
    worker = Link("dealer", endpoint, bind=False, identity="verifier", keys=client_keys(run_dir, "verifier"))
    try:
        worker.send(m.Ready(role="verifier", pid=1, impl="x"))
        env = hub.recv(10)
        assert env is not None and env.peer == "verifier" and env.user == "verifier"
        hub.send("verifier", m.Shutdown(reason="ok"))
        assert worker.recv(10).msg == m.Shutdown(reason="ok")
    finally:
        worker.close(), hub.close()


def test_a_client_without_the_run_key_gets_no_reply_and_changes_nothing(run_dir, endpoint):
    hub = ZmqRoleClient(endpoint, ("verifier",), keys=server_keys(run_dir, ["verifier"]))
    public, secret = zmq.curve_keypair()
    server = client_keys(run_dir, "verifier").server
    strangers = [Link("dealer", endpoint, bind=False, identity="verifier", keys=Keys(public, secret, server=server))]
    raw = zmq.Context.instance().socket(zmq.DEALER)  # no CURVE at all
    raw.setsockopt(zmq.IDENTITY, b"verifier")
    raw.setsockopt(zmq.LINGER, 0)
    raw.setsockopt(zmq.SNDTIMEO, 2000)  # over tcp the dealer may have no pipe yet and would block forever
    raw.connect(endpoint)
    try:
        for link in strangers:
            link.send(m.Ready(role="verifier", pid=6, impl="x"))
            link.send(m.Verdicts(request_id="verify-1", items=[]))
        try:  # a frame that cannot even leave the socket does not get in either
            raw.send_multipart(m.encode(m.Ready(role="verifier", pid=7, impl="x")))
            raw.send_multipart([m.HEADER, b"\xc1"])  # would get an Error reply if it got in
        except zmq.Again:
            pass
        assert quiet(hub.link)
        assert not raw.poll(500) and all(quiet(link, 0.2) for link in strangers)
        assert hub.link.decode_errors == 0
    finally:
        raw.close(0)
        for link in strangers:
            link.close()
        hub.close()


def test_a_key_speaks_only_for_its_own_role(run_dir, endpoint):
    """The generator's key connecting first under the identity "verifier": its
    frames come from "generator", and the real verifier still gets its name."""
    hub = ZmqRoleClient(endpoint, ("generator", "verifier"), keys=server_keys(run_dir, ["generator", "verifier"]))
    forger = zmq.Context.instance().socket(zmq.DEALER)
    keys = client_keys(run_dir, "generator")
    forger.setsockopt(zmq.IDENTITY, b"verifier")
    forger.curve_publickey, forger.curve_secretkey, forger.curve_serverkey = keys.public, keys.secret, keys.server
    forger.setsockopt(zmq.LINGER, 0)
    forger.connect(endpoint)
    honest = Link("dealer", endpoint, bind=False, identity="verifier", keys=client_keys(run_dir, "verifier"))
    try:
        forger.send_multipart(m.encode(m.Verdicts(request_id="verify-1", items=[])))
        env = hub.recv(10)
        assert env is not None and env.peer == "generator"
        honest.send(m.Ready(role="verifier", pid=3, impl="x"))
        env = hub.recv(10)
        assert env is not None and env.peer == "verifier" and env.msg.pid == 3
        hub.send("verifier", m.Shutdown(reason="to the verifier"))
        assert honest.recv(10).msg.reason == "to the verifier" and not forger.poll(300)
    finally:
        forger.close(0), honest.close(), hub.close()


def test_a_live_roles_name_cannot_be_taken_over(run_dir, endpoint):
    hub = ZmqRoleClient(endpoint, ("verifier",), keys=server_keys(run_dir, ["verifier"]))
    honest = Link("dealer", endpoint, bind=False, identity="verifier", keys=client_keys(run_dir, "verifier"))
    try:
        honest.send(m.Ready(role="verifier", pid=1, impl="x"))
        assert hub.recv(10).msg.pid == 1
        # a second connection of the role (not a restart: no Ready) is refused
        newcomer = Link("dealer", endpoint, bind=False, identity="verifier", keys=client_keys(run_dir, "verifier"))
        newcomer.send(m.Verdicts(request_id="verify-1", items=[]))
        assert quiet(hub.link) and hub.link.refused == 1
        hub.send("verifier", m.Shutdown(reason="to the first"))
        assert honest.recv(10).msg.reason == "to the first" and quiet(newcomer, 0.5)
        newcomer.close()
    finally:
        honest.close(), hub.close()


def test_unauthenticated_tcp_off_loopback_is_refused():
    with pytest.raises(TransportError, match="without CURVE"):
        Link("router", "tcp://0.0.0.0:5999", bind=True)


def test_lifecycle_counts_a_message_only_from_the_role_of_its_key(tmp_path):
    from launch.supervisor import Supervisor

    cfg = config_mod.load("tiny", [f'run.runs_dir="{tmp_path}"'])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    sup = Supervisor(cfg, run_dir)
    ep = sup.endpoints["lifecycle"]
    forger = Link("push", ep, bind=False, keys=client_keys(run_dir, "trainer"))
    coordinator = Link("push", ep, bind=False, keys=client_keys(run_dir, "coordinator"))
    try:
        forger.send(m.Finished(ok=True, summary="forged"))
        forger.send(m.Dead(role="generator", pid=1, reason="forged"))
        deadline = time.monotonic() + 30  # generous: CI machines are loaded
        while sup.refused < 2 and time.monotonic() < deadline:
            assert sup._drain_lifecycle(0.2) is None
        assert sup.refused == 2 and sup.roles["generator"].state == "starting"
        coordinator.send(m.Finished(ok=False, summary="honest"))
        finished = None
        while finished is None and time.monotonic() < deadline + 5:
            finished = sup._drain_lifecycle(0.2)
        assert finished == m.Finished(ok=False, summary="honest")
    finally:
        forger.close(), coordinator.close(), sup.life.close()


def test_a_coordinator_whose_loop_is_stuck_is_restarted(tmp_path):
    """Watchdog: the heartbeat says the loop has not turned for too long."""
    from launch.supervisor import Supervisor

    cfg = config_mod.load("tiny", ["supervisor.loop_timeout=5"])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    sup = Supervisor(cfg, run_dir)
    started = []
    sup.start_role = started.append
    try:
        for rp in sup.roles.values():
            rp.popen = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            rp.last_heartbeat = time.time()
        coord = sup.roles["coordinator"]
        coord.stats = {"loop_age": 4.0}
        sup._check_health()
        assert started == []
        coord.stats = {"loop_age": 6.0}
        stuck = coord.popen
        sup._check_health()
        assert started == ["coordinator"] and coord.restarts == 1 and stuck.poll() is not None
    finally:
        for rp in sup.roles.values():
            if rp.popen.poll() is None:
                rp.popen.kill()
            rp.popen.wait()
        sup.life.close()


def test_ipc_sockets_live_in_a_private_directory(tmp_path):
    ep = ipc_endpoint(str(tmp_path), "hub")
    assert stat.S_IMODE(os.stat(os.path.dirname(ep.removeprefix("ipc://"))).st_mode) == 0o700
