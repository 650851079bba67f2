"""The supervisor behind ``constellation up``.

It prepares the run directory and the base model, starts the five roles as
separate OS processes, waits for each READY (naming the role that fails to
start), watches heartbeats, restarts a dead role up to ``max_restarts`` times,
and shuts everything down on Finished, Ctrl-C or SIGTERM.

Security (docs/security.md): the run directory is private to the user
(0700); the supervisor makes the run's CURVE keys (a server pair and one pair
per role, RUN_DIR/keys, 0600 files), every socket uses them, and lifecycle
messages count only from the role their key belongs to: a Ready, Heartbeat
or Dead naming another role, or a Finished not sent by the coordinator, is
refused and logged.

Watchdog: a role whose heartbeat reports ``loop_age`` (the coordinator's own
loop) above ``supervisor.loop_timeout`` is restarted like a dead one.

No orphans: each child gets PR_SET_PDEATHSIG=SIGKILL, so it dies with the
supervisor even if the supervisor is killed with -9; on a clean shutdown the
children get SIGTERM, then SIGKILL after ``shutdown_grace`` seconds.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from constellation.protocol import config as config_mod
from constellation.protocol import messages as m
from launch.memory_plan import PlanDoesNotFit, gpu_memory_check
from constellation.runtime import lifecycle
from constellation.runtime.registry import roles_of
from constellation.runtime.requests import MAX_TIMEOUTS
from constellation.protocol.transport import Link, free_tcp_endpoint, ipc_endpoint, make_run_keys, server_keys
from launch.console import ConsoleView

PR_SET_PDEATHSIG = 1


class SupervisorError(RuntimeError):
    pass


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


@dataclass
class RoleProc:
    name: str
    log_path: Path
    popen: subprocess.Popen | None = None
    restarts: int = 0
    state: str = "starting"
    ready: bool = False
    last_heartbeat: float = 0.0
    queue_depth: int = 0
    stats: dict[str, float] = field(default_factory=dict)
    peak_rss_mib: float = 0.0  # the largest any of its processes reported (heartbeats), over restarts
    progress_seen: float = -1.0  # the coordinator's progress count last seen, and when it last changed
    progress_at: float | None = None

    def to_json(self) -> dict:
        return {"pid": self.popen.pid if self.popen else None, "state": self.state, "restarts": self.restarts,
                "queue_depth": self.queue_depth, "stats": self.stats, "peak_rss_mib": self.peak_rss_mib,
                "last_heartbeat": self.last_heartbeat,
                "log": str(self.log_path)}


def role_python(cfg: config_mod.Config, role: str) -> str:
    """The interpreter a role starts with: ``generator.python`` for the
    generator (e.g. the vLLM venv), this process's own for everything else."""
    python = cfg.generator.python if role == "generator" else ""
    if not python:
        return sys.executable
    path = Path(python).expanduser()
    if not (path.is_file() and os.access(path, os.X_OK)):
        hint = " (create it with scripts/make_vllm_venv.sh)" if ".venv-vllm" in python else ""
        raise SupervisorError(f"generator.python = {python!r} is not an executable file{hint}")
    return str(path.absolute())  # not resolved: a venv's python is a symlink that must keep its venv


class Supervisor:
    def __init__(self, cfg: config_mod.Config, run_dir: Path, console: Console | None = None) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        self.console = console or Console()
        self.view = ConsoleView(run_dir, self.console)
        self.roles = {name: RoleProc(name, run_dir / "logs" / f"{name}.log") for name in roles_of(cfg)}
        self._signal: int | None = None
        self.endpoints = self.make_endpoints()
        role_python(cfg, "generator")  # a wrong generator.python fails here, before anything starts
        (run_dir / "config.toml").write_text(config_mod.to_toml(cfg))
        (run_dir / "endpoints.json").write_text(json.dumps(self.endpoints, indent=1))
        make_run_keys(run_dir, list(self.roles))
        self.life = Link("pull", self.endpoints["lifecycle"], bind=True, keys=server_keys(run_dir, list(self.roles)))
        self.refused = 0  # lifecycle messages refused: sent under another role's key, or a Ready without its token
        self.launch_secret = lifecycle.new_secret()  # in memory only: a stolen key file does not make a Ready count

    def make_endpoints(self) -> dict[str, str]:
        """The hub and lifecycle endpoints (a launcher that places roles on other hosts overrides this)."""
        if self.cfg.run.transport == "tcp":
            return {"hub": free_tcp_endpoint(), "lifecycle": free_tcp_endpoint()}
        if self.cfg.run.transport == "ipc":
            return {"hub": ipc_endpoint(str(self.run_dir), "hub"),
                    "lifecycle": ipc_endpoint(str(self.run_dir), "lifecycle")}
        raise SupervisorError(f"run.transport must be 'ipc' or 'tcp', got {self.cfg.run.transport!r}")

    # ------------------------------------------------------------------
    @staticmethod  # also how a Ray actor starts its role (launch/ray_launcher.py)
    def _spawn(args: list[str], log_path: Path, python: str = sys.executable, restarts: int = 0,
               launch: dict[str, str] | None = None) -> subprocess.Popen:
        """``launch``: the process's launch token (and the coordinator's secret), runtime/lifecycle.py."""
        env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   CONSTELLATION_RESTARTS=str(restarts), **(launch or {}))
        with open(log_path, "ab") as logf:
            return subprocess.Popen([python, *args], stdout=logf, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, preexec_fn=_die_with_parent,
                                    start_new_session=True)

    def start_role(self, name: str) -> None:
        rp = self.roles[name]
        rp.popen = self._spawn(["-m", "constellation.runtime.process", name, str(self.run_dir)], rp.log_path,
                               role_python(self.cfg, name), rp.restarts, self.launch_env(name))
        rp.state, rp.ready, rp.last_heartbeat = "starting", False, time.time()

    def launch_env(self, name: str) -> dict[str, str]:
        """The environment that makes a role's Ready count: its token; the coordinator also checks the others'."""
        env = {lifecycle.TOKEN_ENV: lifecycle.launch_token(self.launch_secret, name)}
        if name == "coordinator":
            env[lifecycle.SECRET_ENV] = self.launch_secret
        return env

    def prepare_base_model(self) -> Path:
        """Build (or reuse from the cache) the base model in a child process,
        so this process never imports torch. Shows its progress."""
        log_path = self.run_dir / "logs" / "prepare.log"
        proc = self._spawn(["-m", "launch.prepare", str(self.run_dir)], log_path)
        self.view.follow_prepare(proc, log_path, self._interrupted)
        user_error = [ln[6:] for ln in _tail(log_path).splitlines() if ln.startswith("ERROR ")]
        if proc.returncode == 2 and user_error:  # one line naming the path and the cause, no traceback
            raise SupervisorError(user_error[-1])
        if proc.returncode != 0:
            raise SupervisorError(f"base model preparation failed (exit {proc.returncode}); "
                                  f"last lines of {log_path}:\n{_tail(log_path)}")
        return Path((self.run_dir / "base_model.txt").read_text().strip())

    def _interrupted(self) -> bool:
        return self._signal is not None

    # ------------------------------------------------------------------
    def _handle(self, msg, user: str | None) -> m.Finished | None:
        """One lifecycle message, counted only from the role whose key sent it."""
        claimed = "coordinator" if isinstance(msg, m.Finished) else getattr(msg, "role", "")
        if user != claimed:
            self.refused += 1
            self.console.print(f"[red]refused a {type(msg).__name__} for {claimed!r} sent with the key of "
                               f"{user!r} ({self.refused} refused)[/red]")
            return None
        rp = self.roles.get(claimed)
        if isinstance(msg, m.Finished):
            return msg
        if rp is None:
            return None
        if isinstance(msg, m.Ready) and not lifecycle.genuine(self.launch_secret, msg):  # not a process we started
            self.refused += 1
            self.console.print(f"[red]refused a Ready for {claimed!r} (pid {msg.pid}) without its launch token "
                               f"({self.refused} refused)[/red]")
            return None
        rp.last_heartbeat = time.time()
        if isinstance(msg, m.Ready):
            rp.ready, rp.state = True, "ready"
        elif isinstance(msg, m.Heartbeat):
            rp.state, rp.queue_depth, rp.stats = msg.state, msg.queue_depth, msg.stats
            rss = msg.stats.get("peak_rss_mib", 0.0)
            if math.isfinite(rss) and 0 < rss < 1 << 30:  # a number from a socket: bounded before kept
                rp.peak_rss_mib = max(rp.peak_rss_mib, rss)
        elif isinstance(msg, m.Dead):
            rp.state = "dead"
            self.console.print(f"[red]{rp.name} reported DEAD: {msg.reason}[/red]")
        return None

    def _drain_lifecycle(self, timeout: float) -> m.Finished | None:
        env = self.life.recv(timeout)
        while env is not None:
            finished = self._handle(env.msg, env.user)
            if finished is not None:
                return finished
            env = self.life.recv(0)
        return None

    def _write_status(self) -> None:
        status = {"updated": time.time(), "run_dir": str(self.run_dir),
                  "roles": {n: rp.to_json() for n, rp in self.roles.items()}}
        tmp = self.run_dir / "status.json.tmp"
        tmp.write_text(json.dumps(status))
        tmp.replace(self.run_dir / "status.json")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.cfg.supervisor.ready_timeout
        while not all(rp.ready for rp in self.roles.values()):
            if self._signal is not None:
                raise KeyboardInterrupt
            self._drain_lifecycle(0.2)
            for rp in self.roles.values():
                if not rp.ready and (rp.popen.poll() is not None or rp.state == "dead"):
                    raise SupervisorError(f"role {rp.name!r} failed to start (exit {rp.popen.poll()}); "
                                          f"last lines of {rp.log_path}:\n{_tail(rp.log_path)}")
            if time.monotonic() > deadline:
                late = [rp.name for rp in self.roles.values() if not rp.ready]
                raise SupervisorError(f"role(s) {', '.join(late)} did not announce READY within "
                                      f"{self.cfg.supervisor.ready_timeout:.0f}s; see {self.run_dir / 'logs'}")
            self._write_status()

    def _check_health(self) -> None:
        """Restart a role whose process exited or whose heartbeats stopped."""
        now = time.time()
        for rp in self.roles.values():
            code = rp.popen.poll()
            silent = now - rp.last_heartbeat > self.cfg.supervisor.heartbeat_timeout
            stuck = rp.stats.get("loop_age", 0.0) > self.cfg.supervisor.loop_timeout
            stalled = self._stalled(rp, now)
            if code == 0:  # a clean exit only follows Shutdown/SIGTERM: the run is ending
                rp.state = "stopped"
                continue
            if code is None and not silent and not stuck and not stalled:
                continue
            why = (f"exited with {code}" if code is not None else f"silent for {now - rp.last_heartbeat:.0f}s"
                   if silent else f"alive but its loop has not turned for {rp.stats['loop_age']:.0f}s"
                   if stuck else stalled)
            if rp.restarts >= self.cfg.supervisor.max_restarts:
                raise SupervisorError(f"role {rp.name!r} {why} and was already restarted {rp.restarts} times; "
                                      f"last lines of {rp.log_path}:\n{_tail(rp.log_path)}")
            if code is None:
                _kill(rp.popen, 0)
            rp.restarts += 1
            self.console.print(f"[yellow]{rp.name} {why}; restarting ({rp.restarts}/"
                               f"{self.cfg.supervisor.max_restarts})[/yellow]")
            rp.stats, rp.progress_at = {}, None
            self.start_role(rp.name)

    def _stalled(self, rp: RoleProc, now: float) -> str:
        """The progress watchdog: why a coordinator whose loop turns but that handles
        no reply counts as stuck ("" while it progresses). The bound grows by
        the request loop's own give-up time while requests are in flight."""
        if "progress" not in rp.stats:
            return ""
        if rp.stats["progress"] != rp.progress_seen or rp.progress_at is None:
            rp.progress_seen, rp.progress_at = rp.stats["progress"], now
            return ""
        in_flight = int(rp.stats.get("pending", 0))
        bound = progress_bound(self.cfg, in_flight)
        idle = now - rp.progress_at
        return (f"alive but has handled no reply for {idle:.0f}s ({in_flight} requests in flight; bound {bound:.0f}s)"
                if idle > bound else "")

    def shutdown(self) -> None:
        procs = [rp.popen for rp in self.roles.values() if rp.popen is not None and rp.popen.poll() is None]
        for p in procs:
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.cfg.supervisor.shutdown_grace
        for p in procs:
            _kill(p, max(0.0, deadline - time.monotonic()))
        for rp in self.roles.values():
            rp.state = "stopped" if rp.popen is None or rp.popen.returncode is not None else rp.state
        self._write_status()
        self.life.close()

    # ------------------------------------------------------------------
    def run(self) -> int:
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.view.header(self.cfg)
            base = self.prepare_base_model()
            self.console.print(f"base model: {base}")
            try:
                self.console.print(gpu_memory_check(self.cfg, base))
            except PlanDoesNotFit as e:  # refuse before any role takes memory, with the numbers
                raise SupervisorError(str(e)) from e
            for name in self.roles:
                self.start_role(name)
            self.wait_ready()
            pids = ", ".join(f"{n}={rp.popen.pid}" for n, rp in self.roles.items())
            self.console.print(f"all roles ready ({pids})")
            finished = None
            while finished is None:
                if self._signal is not None:
                    raise KeyboardInterrupt
                finished = self._drain_lifecycle(0.5)
                if finished is None:
                    self._check_health()
                self._write_status()
                self.view.poll()
            self.view.poll()
            self.shutdown()
            self.view.final_table()
            self.console.print(self.memory_line())
            if not finished.ok and finished.summary:
                self.console.print(f"[red]run failed: {finished.summary}[/red]")
            return 0 if finished.ok else 1
        except KeyboardInterrupt:
            self.console.print("[yellow]interrupted: shutting down all roles[/yellow]")
            self.shutdown()
            return 130
        except Exception:
            self.shutdown()
            raise
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def memory_line(self) -> str:
        """Peak resident memory of each role's process, as their heartbeats reported it (status.json keeps it too)."""
        parts = [f"{n} {rp.peak_rss_mib / 1024:.2f}" for n, rp in self.roles.items() if rp.peak_rss_mib]
        return "peak memory per role (GiB): " + (", ".join(parts) if parts else "no heartbeat reported it")

    def _on_signal(self, signum, frame) -> None:
        self._signal = signum


def progress_bound(cfg: config_mod.Config, in_flight: int) -> float:
    """Seconds without a handled reply before the coordinator counts as stuck."""
    extra = cfg.coordinator.request_timeout * (MAX_TIMEOUTS + 1) if in_flight else 0.0
    return cfg.supervisor.progress_timeout + extra


def _kill(p: subprocess.Popen, grace: float) -> None:
    try:
        p.wait(timeout=grace) if grace > 0 else None
    except subprocess.TimeoutExpired:
        pass
    if p.poll() is None:
        p.kill()
        p.wait()


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"
