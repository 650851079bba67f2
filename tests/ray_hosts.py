"""Two "hosts" on one machine for the Ray tests: two network namespaces joined
by a veth pair, a Ray head in the first and a Ray worker node in the second.

  host a  (netns cst-a-<pid>)  10.77.0.1/24  ray start --head, the driver (constellation up)
  host b  (netns cst-b-<pid>)  10.77.0.2/24  ray start --address 10.77.0.1:6379

The addresses exist only inside the namespaces, so every packet of the test
stays on the veth pair or a namespace's loopback. Cleanup kills the processes
living in the namespaces by pid (``ip netns pids``: only what the test
started) and deletes the namespaces, which removes the veth pair too.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAD_IP, WORKER_IP, GCS_PORT = "10.77.0.1", "10.77.0.2", 6379


@dataclass
class TwoHosts:
    ns_a: str
    ns_b: str
    env: dict

    @property
    def address(self) -> str:
        return f"{HEAD_IP}:{GCS_PORT}"

    def cmd(self, ns: str, *args: str) -> list[str]:
        """``args`` run inside namespace ``ns``."""
        return ["ip", "netns", "exec", ns, *args]

    def pids(self, ns: str) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def raylet_pid(self, ns: str) -> int:
        for pid in self.pids(ns):
            try:
                argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if argv0.endswith(b"/raylet"):
                return pid
        raise AssertionError(f"no raylet process in netns {ns}")


def namespaces_unavailable() -> str:
    """Why two network namespaces cannot be made here, or '' if they can."""
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    name = f"cst-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return ""


def _sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True)


def _make_namespaces(ns_a: str, ns_b: str) -> None:
    veth = f"cv{os.getpid() % 100000}"
    _sh("ip", "netns", "add", ns_a)
    _sh("ip", "netns", "add", ns_b)
    _sh("ip", "link", "add", f"{veth}a", "netns", ns_a, "type", "veth", "peer", "name", f"{veth}b", "netns", ns_b)
    for ns, dev, ip in ((ns_a, f"{veth}a", HEAD_IP), (ns_b, f"{veth}b", WORKER_IP)):
        _sh("ip", "-n", ns, "link", "set", "lo", "up")
        _sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
        _sh("ip", "-n", ns, "link", "set", dev, "up")


def _ray_env(temp_dir: str) -> dict:
    """Ray's processes import this checkout, notice a lost node within seconds,
    and keep their sockets and logs in a directory of this test."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_TMPDIR=temp_dir,
               RAY_health_check_period_ms="500", RAY_health_check_timeout_ms="1000",
               RAY_health_check_failure_threshold="3", RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    return env


def _ray_start(hosts: TwoHosts, ns: str, ip: str, temp_dir: str, *role_args: str) -> None:
    ray = str(Path(sys.executable).with_name("ray"))
    # 8 logical CPUs: room for all five roles on either host, so a lost host's roles fit on the other
    cmd = hosts.cmd(ns, ray, "start", *role_args, f"--node-ip-address={ip}", "--num-cpus=8",
                    "--object-store-memory=100000000", "--disable-usage-stats", f"--labels=host={ns[:5]}")
    done = subprocess.run(cmd, env=hosts.env, capture_output=True, text=True, timeout=180, cwd=ROOT)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


@contextmanager
def two_hosts():
    """Namespaces, veth pair and a two-node Ray cluster; all gone on exit."""
    ns_a, ns_b = f"cst-a-{os.getpid()}", f"cst-b-{os.getpid()}"
    temp_dir = tempfile.mkdtemp(prefix="cr", dir="/tmp")  # short: Ray's unix socket paths live under it
    hosts = TwoHosts(ns_a, ns_b, _ray_env(temp_dir))
    try:
        _make_namespaces(ns_a, ns_b)
        _ray_start(hosts, ns_a, HEAD_IP, temp_dir, "--head", f"--port={GCS_PORT}", "--include-dashboard=false",
                   f"--temp-dir={temp_dir}")
        _ray_start(hosts, ns_b, WORKER_IP, temp_dir, f"--address={hosts.address}")
        yield hosts
    finally:
        for ns in (ns_b, ns_a):
            _kill_all(hosts, ns)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _kill_all(hosts: TwoHosts, ns: str) -> None:
    """SIGKILL every process of the namespace (the test started each one), until none is left."""
    for _ in range(50):
        pids = hosts.pids(ns)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
