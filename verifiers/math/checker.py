"""Process isolation with a hard deadline: a pool of long-lived worker processes.

Why processes: sympy can run for minutes on a hostile answer, and a Python
thread cannot be stopped; ``signal.alarm`` works only in the main thread. Each
worker (``python -m verifiers.math.worker``) keeps sympy imported and warm; a
check sends one JSON line and waits for the reply with ``select`` until the
deadline. On timeout the worker is killed (SIGKILL) and replaced by a fresh
one, and the check returns a ``timeout`` verdict.

Guarantees:
- ``check`` returns within ``timeout`` seconds (plus a few ms of process
  bookkeeping) once a worker is ready, from any thread; the wait for a worker
  to start (about 1 s, sympy's import) is not counted in the deadline.
- Every outcome is a ``MathVerdict``: a crash of the worker (out of memory, a
  segfault) is a ``parse_error`` with ``error`` saying so, and the worker is replaced.
- ``check_many`` returns verdicts in input order.
Not guaranteed: a bound on the memory of a worker beyond its 2 GiB address-space
limit, or isolation from a malicious host (the worker is not a sandbox; it
only ever parses text, never runs it).
"""

from __future__ import annotations

import atexit
import os
import queue
import select
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Literal

import msgspec

MathVerdictKind = Literal["correct", "incorrect", "no_answer", "parse_error", "timeout"]
STARTUP_TIMEOUT = 60.0  # seconds a new worker has to import sympy and say ready
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding verifiers/


class MathVerdict(msgspec.Struct, frozen=True):
    verdict: MathVerdictKind
    equal: bool
    extracted: str | None  # the answer taken from the prediction text (None: no_answer or timeout)
    gold_normalized: str | None
    pred_normalized: str | None
    seconds: float  # wall time of the check, as seen by the caller
    error: str = ""  # why, for parse_error and timeout


def well_formed(text: str) -> str:
    """``text`` with each lone surrogate (``json.loads('"\\ud800"')``, which UTF-8 cannot
    carry) replaced by U+FFFD; such a character is never part of a math answer."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


class MathCheckerError(RuntimeError):
    """The worker pool itself failed (a worker could not start)."""


class _Worker:
    def __init__(self, judge: str = "") -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
        self.judge = judge  # "module:function" the worker judges with; "" = the sympy checker
        self.proc = subprocess.Popen([sys.executable, "-m", "verifiers.math.worker", *([judge] if judge else [])],
                                     stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=_PACKAGE_ROOT)
        self.buffer = b""
        self.ready = False

    def read_line(self, deadline: float) -> bytes | None:
        """The next line from the worker, or None at the deadline. Raises EOFError if it died."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            readable, _, _ = select.select([fd], [], [], left)
            if readable:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise EOFError(f"worker exited with code {self.proc.wait()}")
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def wait_ready(self) -> None:
        if self.ready:
            return
        try:
            line = self.read_line(time.monotonic() + STARTUP_TIMEOUT)
        except EOFError as e:
            raise MathCheckerError(f"math worker failed to start: {e}") from e
        if line is None:
            self.kill()
            raise MathCheckerError(f"math worker not ready after {STARTUP_TIMEOUT} s")
        self.ready = True

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:  # unflushed bytes to a dead worker: nothing to deliver them to
                pass


class MathChecker:
    """A pool of ``workers`` isolated checker processes; use as a context manager.

    ``check(gold, pred)`` is thread-safe: each call borrows one idle worker."""

    def __init__(self, workers: int = 1, timeout: float = 1.0, judge: str = "") -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.timeout = timeout
        self.n_workers = workers
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._closed = False
        for _ in range(workers):
            self._idle.put(_Worker(judge))

    def __enter__(self) -> "MathChecker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                return
            worker.kill()

    def warm_up(self) -> None:
        """Wait until every worker is ready (so the first checks are not slowed by startup)."""
        workers = [self._idle.get() for _ in range(self.n_workers)]
        try:
            for w in workers:
                w.wait_ready()
        finally:
            for w in workers:
                self._idle.put(w)

    def check(self, gold: str, pred: str, timeout: float | None = None) -> MathVerdict:
        if not isinstance(gold, str) or not isinstance(pred, str):
            raise TypeError(f"gold and pred must be str, got {type(gold).__name__} and {type(pred).__name__}")
        if self._closed:
            raise MathCheckerError("MathChecker is closed")
        limit = self.timeout if timeout is None else timeout
        worker = self._idle.get()
        try:
            worker.wait_ready()
            request = msgspec.json.encode({"gold": well_formed(gold), "pred": well_formed(pred)}) + b"\n"
            t0 = time.monotonic()
            try:
                worker.proc.stdin.write(request)
                worker.proc.stdin.flush()
                line = worker.read_line(t0 + limit)
            except (EOFError, BrokenPipeError) as e:
                worker.kill()
                worker = _Worker(worker.judge)
                return _failed("parse_error", time.monotonic() - t0, f"worker crashed: {e}")
            seconds = time.monotonic() - t0
            if line is None:
                worker.kill()
                worker = _Worker(worker.judge)  # starts now; the next check waits for its READY line
                return _failed("timeout", seconds, f"no verdict within {limit} s")
            fields = msgspec.json.decode(line)
            return MathVerdict(verdict=fields["verdict"], equal=fields["equal"], extracted=fields.get("extracted"),
                               gold_normalized=fields.get("gold_normalized"),
                               pred_normalized=fields.get("pred_normalized"), seconds=seconds,
                               error=fields.get("error", ""))
        finally:
            if self._closed:  # closed while this check ran: nobody will borrow the worker again
                worker.kill()
            else:
                self._idle.put(worker)

    def check_many(self, pairs: Iterable[tuple[str, str]], jobs: int | None = None) -> list[MathVerdict]:
        """Verdicts for (gold, pred) pairs, in input order, on up to ``jobs`` workers at once."""
        pairs = list(pairs)
        jobs = max(1, min(jobs or self.n_workers, self.n_workers))
        if jobs == 1:
            return [self.check(g, p) for g, p in pairs]
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            return list(pool.map(lambda gp: self.check(*gp), pairs))


def _failed(kind: MathVerdictKind, seconds: float, error: str) -> MathVerdict:
    return MathVerdict(verdict=kind, equal=False, extracted=None, gold_normalized=None, pred_normalized=None,
                       seconds=seconds, error=error)


_shared: MathChecker | None = None
_shared_lock = threading.Lock()


def check_answer(gold: str, pred_text: str, timeout: float = 1.0) -> MathVerdict:
    """Is the final answer in ``pred_text`` equal to ``gold``? Decided in an isolated
    worker (one shared, long-lived process) within ``timeout`` seconds."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = MathChecker(workers=1, timeout=timeout)
            atexit.register(_shared.close)
    return _shared.check(gold, pred_text, timeout=timeout)
