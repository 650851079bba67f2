"""Run a candidate Python program against a task's tests in a limited child process.

``run_tests(program, tests, limits)`` starts ``python -I -S -B`` on
``verifiers/code_harness.py`` in a fresh temporary directory, feeds it the
program and the tests, and returns a ``CodeVerdict``:

    status  pass     every test ran and passed
            fail     every test ran (or the program did not load) and one failed
            timeout  the CPU-seconds limit or the wall-clock deadline ended the run
            memory   an allocation failed under the address-space limit
            crash    the child ended before reporting every test, for any other
                     reason (os._exit, a signal, a segfault, a killed interpreter)
    tests   one CaseResult per test: pass | fail | error | memory, or
            not_run for the tests a timeout / crash / memory failure cut off

A test is a piece of Python executed in the program's namespace, usually
``assert f(2) == 4``; a test that defines ``check(candidate)`` is called with
the entry point (HumanEval style).

What the sandbox guarantees (on Linux):
  * The child runs with rlimits: CPU seconds (``RLIMIT_CPU``), address space
    (``RLIMIT_AS``), open files (``RLIMIT_NOFILE``), file size
    (``RLIMIT_FSIZE``), no core dumps, and processes (``RLIMIT_NPROC``): by
    default it may not create any process or thread, so a fork bomb's first
    fork fails. Linux exempts root from ``RLIMIT_NPROC``, so when the parent is
    root the child first switches to an unprivileged user (``Limits.user``,
    default 65534 "nobody"), which also keeps it out of root-only files.
  * A wall-clock deadline: past it the child's whole process group gets
    SIGKILL, and the group is killed after every run anyway, so nothing it
    started outlives the verdict.
  * A fresh temporary working directory (removed afterwards) and an
    environment of PATH/LANG/HOME only: no inherited secrets, API keys or
    PYTHON* variables; ``-I -S`` ignores user site-packages and the venv.
  * stdout/stderr are discarded (fds 1 and 2 are /dev/null, and the Python
    streams a bounded sink), so output floods cost time, never memory.
  * Every failure of the candidate is a typed verdict; ``run_tests`` raises
    only for bad arguments or when no child can be started at all.
What it does not guarantee:
  * It is NOT a security boundary against a determined attacker: there is no
    seccomp filter, no network or mount namespace, and the child can read any
    world-readable file and talk to the network. Run untrusted code from the
    internet in a container or VM.
  * The child reports its results over a pipe it could also write to, so a
    program written to fool the harness can forge results.
  * ``RLIMIT_NPROC`` counts every process of the child's user, so
    ``Limits.processes`` extra processes are only available when that user
    runs nothing else; for a non-root parent (the child keeps its user, which
    runs the parent too) the child can never fork.
  * Memory is limited as address space, which over-counts what a program
    really uses (mapped but untouched pages count).
  * Limits are per child; running many children at once multiplies them.
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
    user: int | None = 65534  # uid/gid to switch to when the parent is root (None: stay)

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
    """Runs in the child between fork and exec: switch user, then set rlimits
    (in that order: setuid must not see the small process limit)."""
    if drops_privileges(limits):
        os.setgroups([])
        os.setgid(limits.user)
        os.setuid(limits.user)
    cpu = limits.cpu_seconds
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # SIGXCPU at cpu, SIGKILL at cpu+1
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # NPROC counts every process of the user, the child included; the check is
    # at fork time, so a limit of 1 + extra allows ``extra`` more when the user
    # runs nothing else (the usual case for the unprivileged sandbox user)
    nproc = 1 + limits.processes
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


def _read_all(fd: int, out: bytearray) -> None:
    """Read a pipe until EOF, keeping at most RESULT_BYTES."""
    try:
        while chunk := os.read(fd, 65536):
            if len(out) < RESULT_BYTES:
                out += chunk[: RESULT_BYTES - len(out)]
    except OSError:  # the fd was closed under us after a grandchild kept it open too long
        pass


def _parse_results(raw: bytes, n_tests: int) -> tuple[list[CaseResult], CaseResult | None]:
    """Result lines -> (per-test results in index order, load failure or None).
    Lines that are not well-formed records (a forged or cut-off line) are skipped."""
    by_index: dict[int, CaseResult] = {}
    load = None
    for line in raw.decode("utf-8", "replace").splitlines():
        try:
            index, status, detail = json.loads(line)
        except (ValueError, TypeError):
            continue
        if status not in ("pass", "fail", "error", "memory") or not isinstance(index, int):
            continue
        if index == -1:
            load = CaseResult(-1, status, str(detail))
        elif 0 <= index < n_tests and index not in by_index:
            by_index[index] = CaseResult(index, status, str(detail))
    return [by_index[i] for i in sorted(by_index)], load


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
    workdir = tempfile.mkdtemp(prefix="cst-code-")
    read_fd, write_fd = os.pipe()
    t0 = time.monotonic()
    try:
        Path(workdir, "job.json").write_text(json.dumps(
            {"program": program, "tests": list(tests), "entry_point": entry_point}), encoding="utf-8")
        shutil.copy(HARNESS, Path(workdir, "harness.py"))
        if drop:
            for p in (workdir, *(str(q) for q in Path(workdir).iterdir())):
                os.chown(p, limits.user, limits.user)
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir}
        try:
            proc = subprocess.Popen(
                [python, "-I", "-S", "-B", "harness.py", str(write_fd)], cwd=workdir, env=env,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                pass_fds=(write_fd,), start_new_session=True, preexec_fn=lambda: _limit_child(limits))
        except (OSError, subprocess.SubprocessError) as e:
            raise SandboxError(f"cannot start the sandboxed child ({python}): {e}") from e
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
        _kill_group(proc.pid)  # the child, and anything it left behind in its group
        proc.wait()
        reader.join(timeout=1.0)
        results, load = _parse_results(bytes(raw), len(tests))
        status, full, detail = decide(results, load, len(tests), timed_out, proc.returncode)
        return CodeVerdict(status=status, tests=full, detail=detail, seconds=time.monotonic() - t0)
    finally:
        if write_fd >= 0:
            os.close(write_fd)
        os.close(read_fd)
        shutil.rmtree(workdir, ignore_errors=True)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
