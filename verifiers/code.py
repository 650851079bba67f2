"""Run a candidate Python program against a task's tests in a limited child process.

``run_tests(program, tests, limits)`` starts ``python -I -S -B`` on
``verifiers/code_harness.py``, which forks into a *candidate* process (loads
the program, answers calls with plain values) and a *judge* process (runs the
tests, with the program's functions replaced by proxies to the candidate), and
returns a ``CodeVerdict``:

    status  pass     every test ran and passed
            fail     every test ran (or the program did not load) and one failed
            timeout  the CPU-seconds limit or the wall-clock deadline ended the run
            memory   an allocation failed under the address-space limit
            crash    the candidate ended before every test was decided, for any
                     other reason (os._exit, a signal, a segfault)
    tests   one CaseResult per test: pass | fail | error | memory, or
            not_run for the tests a timeout / crash / memory failure cut off

A test is a piece of Python run by the judge; each free name in it is bound
to the program's value of that name: a proxy for a function (arguments and
results cross as ``repr`` text read back with ``ast.literal_eval``), the value
itself for a plain constant. A test that defines ``check(candidate)`` is
called with the entry point (HumanEval style). Tests can therefore compare
plain results (numbers, strings, bytes, tuples, lists, dicts, sets, None) but
not objects of the program's own classes or mutated arguments.

What the sandbox guarantees (on Linux; docs/tasks-and-verifiers.md has each
protection and its fallback):
  * Unforgeable results: the candidate never sees the tests (``tests.json`` is
    0600 and read by the judge before the program loads), the result channel
    or the judge's memory (another user, undumpable); it only hands over plain
    values, so an object with its own ``__eq__``, a patched harness or
    builtins, forged result lines and an early exit all end as fail or crash.
  * rlimits: CPU seconds, address space, open files, file size, no core
    dumps, and processes (by default none: a fork bomb's first fork fails).
    As root the candidate runs as ``Limits.user`` (65534) and the judge as
    ``Limits.user - 1``, since Linux exempts root from ``RLIMIT_NPROC``.
  * A jail where namespaces are available (root and a kernel that allows
    them; ``verifiers/code_jail.py``): a private root on a size-capped tmpfs
    with the system folders read-only, so no file is left behind and no run
    directory or home folder is visible; a network namespace with no usable
    interface (not even 127.0.0.1 of the host); a pid namespace whose pid 1 is
    the candidate, so ``kill(-1, 9)`` reaches nothing outside.
  * A wall-clock deadline: past it the whole process group gets SIGKILL (and
    always after the run), and the jail's processes die with its pid 1.
  * An environment of PATH/LANG/HOME/TMPDIR only; stdout/stderr discarded.
  * Every failure of the candidate is a typed verdict; ``run_tests`` raises
    only for bad arguments or when no child can be started at all.
What it does not guarantee:
  * No seccomp filter: the kernel's whole system-call surface is reachable;
    run code from the internet in a container or VM as well.
  * Without a jail (not root, or namespaces forbidden) files written outside
    the working folder (e.g. to /tmp) stay, world-readable files and the
    network are reachable, and for a non-root parent ``kill(-1, 9)`` reaches
    the parent user's processes.
  * ``RLIMIT_NPROC`` counts every process of the candidate's user, so
    ``Limits.processes`` extra processes are only available when that user
    runs nothing else.
  * Memory is limited as address space, which over-counts what a program
    really uses; limits are per child.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from verifiers.code_jail import SYSTEM_DIRS, enter_jail, jail_available

CodeStatus = Literal["pass", "fail", "timeout", "memory", "crash"]
TestStatus = Literal["pass", "fail", "error", "memory", "not_run"]
HARNESS = Path(__file__).with_name("code_harness.py")
MAX_TESTS = 200  # keeps the result pipe (64 KiB) from ever filling up
MAX_PROGRAM_CHARS = 100_000
RESULT_BYTES = 1 << 20  # most bytes read back from the child


class SandboxError(RuntimeError):
    """The sandbox itself cannot run (no usable interpreter, bad limits)."""


@dataclass(frozen=True)
class Limits:
    cpu_seconds: int = 2  # RLIMIT_CPU of the child
    wall_seconds: float = 5.0  # deadline from start to SIGKILL
    memory_bytes: int = 512 << 20  # RLIMIT_AS (virtual memory, not resident)
    open_files: int = 32  # RLIMIT_NOFILE
    processes: int = 0  # extra processes/threads the child may create (RLIMIT_NPROC)
    file_bytes: int = 1 << 20  # RLIMIT_FSIZE: largest file the child may write
    user: int | None = 65534  # uid/gid of the candidate when the parent is root (None: stay); the judge gets user - 1
    jail: bool = True  # use namespaces where available (verifiers/code_jail.py); False: never

    def __post_init__(self) -> None:
        for name in ("cpu_seconds", "wall_seconds", "memory_bytes", "open_files", "file_bytes"):
            if getattr(self, name) <= 0:
                raise SandboxError(f"Limits.{name} must be > 0, got {getattr(self, name)!r}")
        if self.processes < 0:
            raise SandboxError(f"Limits.processes must be >= 0, got {self.processes!r}")


@dataclass(frozen=True)
class CaseResult:
    index: int
    status: TestStatus
    detail: str = ""


@dataclass(frozen=True)
class CodeVerdict:
    status: CodeStatus
    tests: list[CaseResult] = field(default_factory=list)
    detail: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> int:
        return sum(t.status == "pass" for t in self.tests)


def _reachable_by_others(path: str) -> bool:
    """Whether a user other than the owner may execute ``path`` (o+x on the
    file and on every directory above it)."""
    p = Path(os.path.realpath(path))
    try:
        if not p.stat().st_mode & stat.S_IXOTH:
            return False
        return all(d.stat().st_mode & stat.S_IXOTH for d in p.parents)
    except OSError:
        return False


def find_interpreter(unprivileged: bool) -> str:
    """A Python the child can run: this one, or (when the child will run as
    another user and this one lives in a private folder such as /root) the
    first python3 on the system that other users can execute."""
    ours = os.path.realpath(getattr(sys, "_base_executable", "") or sys.executable)
    if not unprivileged:
        return ours
    for cand in (ours, shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin"), "/usr/bin/python3"):
        if cand and _reachable_by_others(cand):
            return os.path.realpath(cand)
    raise SandboxError(f"running as root, the sandbox switches to an unprivileged user, but no Python "
                       f"interpreter is executable by other users ({ours} is not); install a system python3 "
                       f"or pass Limits(user=None) to stay root (then RLIMIT_NPROC does not apply)")


def drops_privileges(limits: Limits) -> bool:
    """Whether the child switches to the unprivileged user (the parent is root)."""
    return os.geteuid() == 0 and limits.user is not None


def _limit_child(limits: Limits) -> None:
    """Runs in the child between fork and exec: rlimits for the harness and, inherited, for the
    candidate (the harness switches users and limits processes itself, after it forks)."""
    cpu = limits.cpu_seconds
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # SIGXCPU at cpu, SIGKILL at cpu+1
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _read_all(fd: int, out: bytearray) -> None:
    """Read a pipe until EOF, keeping at most RESULT_BYTES."""
    try:
        while chunk := os.read(fd, 65536):
            if len(out) < RESULT_BYTES:
                out += chunk[: RESULT_BYTES - len(out)]
    except OSError:  # the fd was closed under us after a grandchild kept it open too long
        pass


def _parse_results(raw: bytes, n_tests: int) -> tuple[list[CaseResult], CaseResult | None, int | None]:
    """The judge's result lines -> (per-test results in index order, load failure or None,
    how the candidate ended or None). Lines that are not well-formed records are skipped."""
    by_index: dict[int, CaseResult] = {}
    load, ended = None, None
    for line in raw.decode("utf-8", "replace").splitlines():
        try:
            index, status, detail = json.loads(line)
        except (ValueError, TypeError):
            continue
        if index == -2 and status == "ended" and isinstance(detail, int):
            ended = detail
        if status not in ("pass", "fail", "error", "memory") or not isinstance(index, int):
            continue
        if index == -1:
            load = CaseResult(-1, status, str(detail))
        elif 0 <= index < n_tests and index not in by_index:
            by_index[index] = CaseResult(index, status, str(detail))
    return [by_index[i] for i in sorted(by_index)], load, ended


def decide(results: list[CaseResult], load: CaseResult | None, n_tests: int, timed_out: bool,
           returncode: int | None) -> tuple[CodeStatus, list[CaseResult], str]:
    """The verdict from what the child reported and how it ended (a pure function).
    Tests never reported become ``not_run``."""
    reported = {r.index for r in results}
    full = sorted(results + [CaseResult(i, "not_run") for i in range(n_tests) if i not in reported],
                  key=lambda r: r.index)
    if load is not None:  # the program did not load: no test ran
        failed = [CaseResult(i, "not_run") for i in range(n_tests)]
        return ("memory" if load.status == "memory" else "fail"), failed, f"program: {load.detail}"
    if any(r.status == "memory" for r in results):
        return "memory", full, next(r.detail for r in results if r.status == "memory")
    if len(results) == n_tests:
        bad = [r for r in results if r.status != "pass"]
        return ("fail", full, f"test {bad[0].index}: {bad[0].detail}") if bad else ("pass", full, "")
    if timed_out or returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return "timeout", full, f"stopped after {len(results)} of {n_tests} tests"
    return "crash", full, f"child exited with code {returncode} after {len(results)} of {n_tests} tests"


def run_tests(program: str, tests: list[str], limits: Limits | None = None,
              entry_point: str | None = None) -> CodeVerdict:
    """Run ``program`` then each test in a sandboxed child; see the module docstring."""
    limits = limits or Limits()
    if not isinstance(program, str) or len(program) > MAX_PROGRAM_CHARS:
        raise SandboxError(f"program must be a str of at most {MAX_PROGRAM_CHARS} chars, "
                           f"got {type(program).__name__} of length {len(program) if isinstance(program, str) else '?'}")
    if not tests or len(tests) > MAX_TESTS or not all(isinstance(t, str) for t in tests):
        raise SandboxError(f"tests must be 1..{MAX_TESTS} strings, got {len(tests) if tests else 0}")
    drop = drops_privileges(limits)
    python = find_interpreter(drop)
    base = tempfile.mkdtemp(prefix="cst-code-")  # 0700: job/ (program, tests, harness), work/, root/
    read_fd, write_fd = os.pipe()
    t0 = time.monotonic()
    try:
        cwd = _write_job(base, program, tests, entry_point, limits.user if drop else None)
        proc = _start(python, base, cwd, write_fd, limits, drop)
        os.close(write_fd)
        write_fd = -1
        raw = bytearray()
        reader = threading.Thread(target=_read_all, args=(read_fd, raw), daemon=True)
        reader.start()
        timed_out = False
        try:
            proc.wait(timeout=limits.wall_seconds)
        except subprocess.TimeoutExpired:
            timed_out = True
        _kill_group(proc.pid)  # the harness and anything left in its group (the jail's pid 1 takes the rest)
        proc.wait()
        reader.join(timeout=1.0)
        results, load, ended = _parse_results(bytes(raw), len(tests))
        code = ended if ended is not None else proc.returncode
        status, full, detail = decide(results, load, len(tests), timed_out, code)
        return CodeVerdict(status=status, tests=full, detail=detail, seconds=time.monotonic() - t0)
    finally:
        if write_fd >= 0:
            os.close(write_fd)
        os.close(read_fd)
        shutil.rmtree(base, ignore_errors=True)


def _write_job(base: str, program: str, tests: list[str], entry_point: str | None, user: int | None) -> str:
    """The job folder (read by the harness before it drops privileges; tests.json stays 0600 so
    the candidate's user cannot read it) and the candidate's working folder -> the working folder."""
    job, work = Path(base, "job"), Path(base, "work")
    job.mkdir()
    work.mkdir()
    Path(base, "root").mkdir()
    (job / "program.py").write_text(program, encoding="utf-8")
    (job / "tests.json").write_text(json.dumps({"tests": list(tests), "entry_point": entry_point}),
                                    encoding="utf-8")
    os.chmod(job / "tests.json", 0o600)
    shutil.copy(HARNESS, job / "harness.py")
    if user is not None:
        os.chown(work, user, user)
    return str(work)


def _start(python: str, base: str, cwd: str, result_fd: int, limits: Limits, drop: bool) -> subprocess.Popen:
    """The harness, in a jail when one is available (verifiers/code_jail.py)."""
    jail = limits.jail and drop and jail_available()
    job = "/job" if jail else str(Path(base, "job"))
    users = [str(limits.user), str(limits.user - 1)] if drop else ["-1", "-1"]
    extra = _interpreter_prefix(python)

    def before_exec() -> None:
        if jail:
            enter_jail(str(Path(base, "root")), str(Path(base, "job")), extra)
        _limit_child(limits)

    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp" if jail else cwd, "TMPDIR": "/tmp" if jail else cwd}
    try:
        return subprocess.Popen(
            [python, "-I", "-S", "-B", f"{job}/harness.py", job, str(result_fd), *users, str(1 + limits.processes)],
            cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(result_fd,), start_new_session=True, preexec_fn=before_exec)
    except (OSError, subprocess.SubprocessError) as e:
        raise SandboxError(f"cannot start the sandboxed child ({python}): {e}") from e


def _interpreter_prefix(python: str) -> tuple[str, ...]:
    """The interpreter's install folder when it is outside the system folders a jail binds."""
    prefix = os.path.dirname(os.path.dirname(python))
    return () if any(prefix == d or prefix.startswith(d + "/") for d in SYSTEM_DIRS) else (prefix,)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
