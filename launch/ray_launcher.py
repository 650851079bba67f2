"""Roles placed by Ray across hosts: ``constellation up --launcher ray``.

The supervisor runs on one host of a running Ray cluster (the coordinator's
host). Each role becomes a Ray actor, ``RoleActor``, that runs the role's
process (``python -m constellation.runtime.process ROLE RUN_DIR``) exactly as
the local launcher does, on the node Ray picks from ``[launch]``:

  coordinator   always on the supervisor's host (it binds the hub there)
  other roles   num_cpus / num_gpus reserved per role; ``launch.node`` names a
                preferred node by IP or label; preferred, not required, so a
                role whose node is lost comes back on a surviving one

The roles still talk our ZeroMQ protocol over tcp: the hub and the lifecycle
socket bind on ``launch.bind_host`` (``cluster_endpoints``). Ray only places,
watches and restarts.

Restarts are Ray's: an actor has ``max_restarts = supervisor.max_restarts``.
The actor fate-shares with its role process (a role that crashes takes its
actor down, an actor that dies takes its role down by PR_SET_PDEATHSIG), so a
crashed role, a lost node and a silent role (the supervisor kills its actor)
all end in Ray restarting the actor, which starts the role again. The role
announces READY and the coordinator re-sends its pending requests, as after a
local restart.

Files: the run directory is a **shared path**: ``run.runs_dir`` (and
``model.cache_dir``, or the base model's folder) must be mounted at the same
path on every host (NFS, a cluster file system). The trainer writes adapters
into it and the generator loads them from it, as on one host. Each actor
checks, before it starts its role, that it sees this run's directory (the
file ``launch-id`` with the run's random id), and fails with the host and the
path named otherwise. Ray is imported only here, so the core imports without it.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from constellation.protocol import config as config_mod
from launch.supervisor import Supervisor, SupervisorError, _tail, role_python

LAUNCH_ID = "launch-id"  # file in the run directory: the run's random id, proof a node sees the same directory
NAMESPACE = "constellation"  # the Ray namespace of the role actors


def cluster_endpoints(bind_host: str) -> dict[str, str]:
    """The hub and lifecycle endpoints every node connects to: tcp on
    ``bind_host`` (an address of this host), each on a port free right now.
    The coordinator binds the hub and runs on this host, so the port is checked
    where it is bound.

    CURVE (issue 15, part 2) plugs in here: the run's server key pair and one
    key pair per role are made next to these endpoints (in the run directory,
    mode 0600, which every node reads from the shared path) and passed to the
    same ``Link`` calls as on one host."""
    def free_port() -> int:
        with socket.socket() as s:
            s.bind((bind_host, 0))
            return s.getsockname()[1]
    return {"hub": f"tcp://{bind_host}:{free_port()}", "lifecycle": f"tcp://{bind_host}:{free_port()}"}


# -- placement (pure: no Ray) ------------------------------------------------------------------

def check_launch(cfg: config_mod.Config, roles: list[str]) -> None:
    """One clear error for a ``[launch]`` table that names an unknown role or a negative amount."""
    if cfg.run.transport != "tcp":
        raise SupervisorError(f"run.transport = {cfg.run.transport!r} cannot reach other hosts; "
                              f"launch.launcher = 'ray' needs run.transport = 'tcp'")
    for key in ("num_cpus", "num_gpus", "node"):
        table = getattr(cfg.launch, key)
        for role, value in table.items():
            if role not in roles:
                raise SupervisorError(f"launch.{key} names role {role!r}; the roles are {', '.join(roles)}")
            if key != "node" and value < 0:
                raise SupervisorError(f"launch.{key}.{role} = {value} is negative")
    if "coordinator" in cfg.launch.node:
        raise SupervisorError("launch.node.coordinator: the coordinator always runs on the supervisor's host")


def node_id_of(spec: str, nodes: list[dict]) -> str:
    """The Ray node id of the alive node named by ``spec``: its IP, or a label
    "key=value" it was started with (``ray start --labels``). ``nodes`` is
    ``ray.nodes()``."""
    alive = [n for n in nodes if n.get("Alive")]
    if "=" in spec:
        key, value = spec.split("=", 1)
        found = [n for n in alive if n.get("Labels", {}).get(key.strip()) == value.strip()]
    else:
        found = [n for n in alive if n.get("NodeManagerAddress") == spec.strip()]
    if not found:
        known = ", ".join(f"{n.get('NodeManagerAddress')} {n.get('Labels', {})}" for n in alive)
        raise SupervisorError(f"launch.node {spec!r} matches no alive Ray node; the nodes are: {known}")
    return found[0]["NodeID"]


def check_run_dir(run_dir: Path, launch_id: str) -> None:
    """Does this node see the run's directory? (It must: it is a shared path.)"""
    where = f"{socket.gethostname()} ({_node_ip()})"
    try:
        seen = (run_dir / LAUNCH_ID).read_text().strip()
    except OSError as e:
        raise SupervisorError(f"run directory {run_dir} is not reachable on {where}: {e.strerror}; "
                              f"run.runs_dir must be a path shared by every host") from e
    if seen != launch_id:
        raise SupervisorError(f"{run_dir} on {where} holds another run (launch id {seen!r}, expected "
                              f"{launch_id!r}); run.runs_dir must be the same shared path on every host")


def _node_ip() -> str:
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # not inside Ray: the name is enough for an error message
        return "?"


# -- the actor: one role process on one node --------------------------------------------------

class RoleActor:
    """Runs one role's process on the node Ray placed it on and fate-shares with it."""

    def __init__(self, role: str, run_dir: str, launch_id: str, python: str, grace: float,
                 launch: dict[str, str] | None = None) -> None:
        self.run_dir, self.grace = Path(run_dir), grace
        check_run_dir(self.run_dir, launch_id)
        if not os.access(python, os.X_OK):
            raise SupervisorError(f"{python} is not an executable file on {socket.gethostname()} ({_node_ip()})")
        log_path = self.run_dir / "logs" / f"{role}.log"
        self.proc = Supervisor._spawn(["-m", "constellation.runtime.process", role, run_dir], log_path, python,
                                      launch=launch)
        self.stopping = False
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        code = self.proc.wait()
        if code != 0 and not self.stopping:
            os._exit(1)  # the role crashed: so does its actor, and Ray restarts both

    def state(self) -> dict:
        """pid and node of this incarnation; ``code`` once the role exited cleanly."""
        code = self.proc.poll()
        return {"pid": self.proc.pid, "node": _node_ip(), "code": code if code == 0 or self.stopping else None}

    def stop(self) -> int:
        self.stopping = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=self.grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


class RayRole:
    """The supervisor's handle on one role actor, shaped like the
    ``subprocess.Popen`` the local launcher keeps (``pid``, ``poll``,
    ``send_signal``, ``wait``, ``kill``, ``returncode``), so the supervisor's
    waiting and shutdown work unchanged. Polling never blocks: one ``state``
    call is in flight at a time."""

    def __init__(self, ray: Any, actor: Any, name: str, log_path: Path) -> None:
        self.ray, self.actor, self.name, self.log_path = ray, actor, name, log_path
        self.pid: int | None = None
        self.node = ""
        self.returncode: int | None = None
        self.restarts = 0  # incarnations seen after the first
        self._pending = actor.state.remote()
        self._stopping: Any = None

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        ready, _ = self.ray.wait([self._pending], timeout=0)
        if not ready:
            return None
        try:
            self._saw(self.ray.get(self._pending))
        except self.ray.exceptions.RayActorError as e:
            if not self._restarting():
                self._lost(e)
        if self.returncode is None:
            self._pending = self.actor.state.remote()
        return self.returncode

    def _saw(self, state: dict) -> None:
        if self.pid is not None and (state["pid"], state["node"]) != (self.pid, self.node):
            self.restarts += 1
        self.pid, self.node = state["pid"], state["node"]
        if state["code"] is not None:
            self.returncode = state["code"]

    def _restarting(self) -> bool:
        """Ray keeps a dead actor's name only while it will restart it."""
        try:
            self.ray.get_actor(self.name, namespace=NAMESPACE)
            return True
        except ValueError:
            return False

    def _lost(self, error: Exception) -> None:
        self.returncode = 1
        with open(self.log_path, "a") as log:  # the supervisor quotes this log's tail
            log.write(f"\n[ray] actor {self.name} is dead and will not be restarted: {error}\n")

    def restart(self) -> None:
        """Kill the actor (and with it the role); Ray starts it again."""
        self.ray.kill(self.actor, no_restart=False)

    def send_signal(self, signum: int) -> None:
        self._stopping = self.actor.stop.remote()

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None and self._stopping is not None:
            try:
                self.returncode = self.ray.get(self._stopping, timeout=timeout)
            except self.ray.exceptions.GetTimeoutError as e:
                raise subprocess.TimeoutExpired(self.name, timeout) from e
            except self.ray.exceptions.RayActorError:
                self.returncode = 1
        return self.returncode if self.returncode is not None else 1

    def kill(self) -> None:
        self.ray.kill(self.actor, no_restart=True)
        self.returncode = -signal.SIGKILL


# -- the supervisor ---------------------------------------------------------------------------

class RaySupervisor(Supervisor):
    """The local supervisor, with roles started as Ray actors and restarted by Ray."""

    def __init__(self, cfg: config_mod.Config, run_dir: Path, console: Any = None) -> None:
        from constellation.runtime.registry import roles_of

        check_launch(cfg, list(roles_of(cfg)))
        try:
            import ray
        except ImportError as e:
            raise SupervisorError("launch.launcher = 'ray' needs Ray: pip install -e '.[ray]'") from e
        self.ray = ray
        self.launch_id = secrets.token_hex(16)
        (run_dir / LAUNCH_ID).write_text(self.launch_id)
        try:
            ray.init(address=cfg.launch.ray_address, namespace=NAMESPACE, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise SupervisorError(f"cannot join the Ray cluster at launch.ray_address = "
                                  f"{cfg.launch.ray_address!r}: {e}; start one with `ray start --head`") from e
        self.here = ray.get_runtime_context().get_node_id()
        self.bind_host = cfg.launch.bind_host or ray.util.get_node_ip_address()
        super().__init__(cfg, run_dir, console)

    def make_endpoints(self) -> dict[str, str]:
        return cluster_endpoints(self.bind_host)

    def _options(self, name: str) -> dict:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        spec = self.cfg.launch.node.get(name, "")
        if name == "coordinator":  # it binds the hub on this host
            strategy: Any = NodeAffinitySchedulingStrategy(self.here, soft=False)
        elif spec:
            strategy = NodeAffinitySchedulingStrategy(node_id_of(spec, self.ray.nodes()), soft=True)
        else:
            strategy = "DEFAULT"
        return {"name": self.actor_name(name), "namespace": NAMESPACE, "scheduling_strategy": strategy,
                "num_cpus": self.cfg.launch.num_cpus.get(name, 1.0),
                "num_gpus": self.cfg.launch.num_gpus.get(name, 0.0),
                "max_restarts": self.cfg.supervisor.max_restarts, "max_task_retries": 0}

    def actor_name(self, role: str) -> str:
        return f"{self.launch_id}-{role}"

    def start_role(self, name: str) -> None:
        rp = self.roles[name]
        actor_cls = self.ray.remote(RoleActor).options(**self._options(name))
        actor = actor_cls.remote(name, str(self.run_dir), self.launch_id, role_python(self.cfg, name),
                                 self.cfg.supervisor.shutdown_grace, self.launch_env(name))
        rp.popen = RayRole(self.ray, actor, self.actor_name(name), rp.log_path)
        rp.state, rp.ready, rp.last_heartbeat = "starting", False, time.time()

    def wait_ready(self) -> None:
        super().wait_ready()
        for rp in self.roles.values():  # every READY came in; the pids and nodes follow within a poll
            while rp.popen.pid is None and rp.popen.poll() is None:
                time.sleep(0.05)
        self._write_placement()
        self.console.print("placed by Ray: " + ", ".join(f"{n} on {rp.popen.node}" for n, rp in self.roles.items()))

    def _check_health(self) -> None:
        """Ray restarts a role that crashed or whose node was lost; the supervisor
        notices the new incarnation, has Ray restart a silent role, and gives up
        only when Ray did (``supervisor.max_restarts`` used up)."""
        now, limit = time.time(), self.cfg.supervisor.max_restarts
        for rp in self.roles.values():
            role: RayRole = rp.popen
            code = role.poll()
            if role.restarts > rp.restarts:
                rp.restarts, rp.ready, rp.state, rp.last_heartbeat = role.restarts, False, "starting", now
                self.console.print(f"[yellow]{rp.name} restarted by Ray on {role.node} ({rp.restarts}/{limit})"
                                   f"[/yellow]")
                self._write_placement()
            if code == 0:  # a clean exit only follows Shutdown/SIGTERM: the run is ending
                rp.state = "stopped"
            elif code is not None:
                raise SupervisorError(f"role {rp.name!r} is lost after {rp.restarts} restart(s) by Ray; "
                                      f"last lines of {rp.log_path}:\n{_tail(rp.log_path)}")
            elif now - rp.last_heartbeat > self.cfg.supervisor.heartbeat_timeout:
                self.console.print(f"[yellow]{rp.name} silent for {now - rp.last_heartbeat:.0f}s; "
                                   f"Ray restarts it[/yellow]")
                role.restart()
                rp.last_heartbeat = now

    def _write_placement(self) -> None:
        """placement.json: where each role runs now -> {role: {node, pid, restarts}}."""
        placed = {n: {"node": rp.popen.node, "pid": rp.popen.pid, "restarts": rp.popen.restarts}
                  for n, rp in self.roles.items() if rp.popen is not None}
        tmp = self.run_dir / "placement.json.tmp"
        tmp.write_text(json.dumps(placed, indent=1))
        tmp.replace(self.run_dir / "placement.json")

    def shutdown(self) -> None:
        try:
            super().shutdown()
        finally:
            for rp in self.roles.values():
                if rp.popen is not None:
                    self.ray.kill(rp.popen.actor, no_restart=True)
            self.ray.shutdown()
