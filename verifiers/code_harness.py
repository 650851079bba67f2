"""Runs inside the sandbox of ``verifiers.code`` (``python -I -S -B``, stdlib only), in two processes.

    python harness.py JOB_DIR RESULT_FD CANDIDATE_UID JUDGE_UID NPROC

The harness starts as one process and forks at once, before it has read any
test, into:

  * the candidate (the child; pid 1 of the sandbox's pid namespace when there
    is one): switches to CANDIDATE_UID, limits its processes to NPROC, loads
    ``program.py`` and then only answers requests from the judge, one JSON
    line each way:
        ["get", name]                  -> ["callable"] | ["value", repr] | ["module", name] | ["missing"]
        ["call", name, repr(args), repr(kwargs)]
                                       -> ["value", repr] | ["raise", kind, detail]
    It loads the program only on the first request, ["ready"], answered with
    ["ok"], or ["load", status, detail] when the program did not load.
  * the judge (the parent): switches to JUDGE_UID, makes itself undumpable
    (no ptrace, no /proc/PID/mem), reads ``tests.json`` (removes it when it
    can), and runs each test with every free name of the test bound to the
    candidate's value or to a proxy whose calls go over the pipe. It writes
    ``[index, status, detail]`` per test to RESULT_FD (status pass | fail |
    error | memory), ``[-1, status, detail]`` when the program did not load,
    and ``[-2, "ended", code]`` when the candidate died (code: exit code, or
    minus the signal).

Results are decoded in the judge with ``ast.literal_eval``: the candidate can
only ever hand over plain values (numbers, strings, bytes, tuples, lists,
dicts, sets, None), never an object with its own ``__eq__``, and it never sees
a test, an expected value or the result channel. Whatever it writes to its
pipe is at most a wrong answer.
"""

import ast
import builtins
import json
import os
import resource
import signal
import sys
import time

DETAIL_CHARS = 200
REPR_CHARS = 1 << 20  # a longer value is an error, not a result
SAFE_MODULES = ("math", "cmath", "re", "string", "collections", "itertools", "functools", "operator",
                "heapq", "bisect", "statistics", "fractions", "decimal")


def _describe(e):
    text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    return text[:DETAIL_CHARS]


def _drop(uid, nproc):
    if os.geteuid() == 0 and uid >= 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


class _Sink:
    """Stands for stdout/stderr: keeps nothing (fds 1 and 2 are /dev/null too)."""

    def write(self, s):
        return len(s)

    def flush(self):
        pass


# ---- the candidate ----

def _answer(request, namespace):
    if request[0] == "get":
        if request[1] not in namespace:
            return ["missing"]
        value = namespace[request[1]]
        if type(value) is type(os):
            return ["module", value.__name__]
        return ["callable"] if callable(value) else ["value", repr(value)]
    fn = namespace[request[1]]
    try:
        result = fn(*ast.literal_eval(request[2]), **ast.literal_eval(request[3]))
        return ["value", repr(result)]
    except MemoryError as e:
        return ["raise", "MemoryError", _describe(e)]
    except BaseException as e:  # SystemExit too: the call failed, the candidate goes on
        return ["raise", type(e).__name__, _describe(e)]


def candidate(job_dir, requests, replies, uid, nproc):
    # a kernel signal to a pid namespace's init is dropped without a handler: exit on SIGXCPU
    signal.signal(signal.SIGXCPU, lambda *_: os._exit(128 + signal.SIGXCPU))
    with open(os.path.join(job_dir, "program.py"), encoding="utf-8") as f:
        program = f.read()  # before dropping privileges: the job folder is private to the parent's user
    _drop(uid, nproc)
    inbox, outbox = os.fdopen(requests, "r", encoding="utf-8"), os.fdopen(replies, "w", encoding="utf-8")
    inbox.readline()  # "ready": the judge has read (and, outside a jail, removed) the tests
    sys.stdout = sys.stderr = _Sink()
    namespace = {"__name__": "__candidate__"}
    reply = ["ok"]
    try:
        exec(compile(program, "<candidate>", "exec"), namespace)
    except MemoryError as e:
        reply = ["load", "memory", _describe(e)]
    except BaseException as e:
        reply = ["load", "fail", _describe(e)]
    outbox.write(json.dumps(reply) + "\n")
    outbox.flush()
    if reply[0] == "load":
        return
    for line in inbox:
        outbox.write(json.dumps(_answer(json.loads(line), namespace)) + "\n")
        outbox.flush()


# ---- the judge ----

class CandidateDied(Exception):
    pass


class CandidateRaised(Exception):
    pass


class _Link:
    def __init__(self, requests, replies):
        self.outbox = os.fdopen(requests, "w", encoding="utf-8")
        self.inbox = os.fdopen(replies, "r", encoding="utf-8")

    def ask(self, request):
        try:
            self.outbox.write(json.dumps(request) + "\n")
            self.outbox.flush()
            line = self.inbox.readline(REPR_CHARS + 100)
        except OSError:
            line = ""
        if not line.endswith("\n"):
            raise CandidateDied()
        return json.loads(line)


def _plain(text):
    """A value the candidate sent (a repr) -> a plain Python value, or an error."""
    if not isinstance(text, str) or len(text) > REPR_CHARS:
        raise CandidateRaised("the result is too long")
    if text in ("nan", "inf", "-inf"):
        return float(text)
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise CandidateRaised(f"the result is not a plain value: {text[:80]}") from None


def _proxy(link, name):
    def call(*args, **kwargs):
        reply = link.ask(["call", name, repr(args), repr(kwargs)])
        if reply[0] == "raise":
            raise (MemoryError if reply[1] == "MemoryError" else CandidateRaised)(reply[2])
        return _plain(reply[1])
    call.__name__ = name
    return call


def _module(name):
    """A module the program imported (``import math``) is imported by the judge itself, from a
    short list of pure stdlib modules (the candidate only names it, so it cannot hand over its own)."""
    if name not in SAFE_MODULES:
        raise CandidateRaised(f"the test uses module {name!r} of the program (allowed: {', '.join(SAFE_MODULES)})")
    import importlib
    return importlib.import_module(name)


def _free_names(tree):
    assigned = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
    assigned |= {n.arg for n in ast.walk(tree) if isinstance(n, ast.arg)}
    assigned |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assigned |= {a.asname or a.name.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return sorted(used - assigned - set(dir(builtins)))


def _bind(link, names, cache):
    """Each free name -> the candidate's plain value or a proxy (asked once per name)."""
    bound = {}
    for name in names:
        if name not in cache:
            reply = link.ask(["get", name])
            cache[name] = (_proxy(link, name) if reply[0] == "callable"
                           else _plain(reply[1]) if reply[0] == "value"
                           else _module(reply[1]) if reply[0] == "module" else None)
        if cache[name] is not None:
            bound[name] = cache[name]
    return bound


def _run_test(link, source, entry, cache):
    """-> (status, detail) of one test."""
    try:
        tree = ast.parse(source)
        names = _free_names(tree) + ([entry] if entry and "def check(" in source else [])
        namespace = {"__name__": "__test__", **_bind(link, names, cache)}
        exec(compile(tree, "<test>", "exec"), namespace)
        if entry and "check" in namespace and "def check(" in source:  # HumanEval style
            namespace["check"](namespace[entry])
        return "pass", ""
    except AssertionError as e:
        return "fail", _describe(e) if str(e) else "assertion failed"
    except MemoryError as e:
        return "memory", _describe(e)
    except CandidateDied:
        raise
    except BaseException as e:
        return "error", _describe(e)


def judge(job_dir, result_fd, link, uid, child):
    with open(os.path.join(job_dir, "tests.json"), encoding="utf-8") as f:
        job = json.load(f)
    try:
        os.unlink(os.path.join(job_dir, "tests.json"))  # in a jail the folder is read-only and 0600 suffices
    except OSError:
        pass
    _drop(uid, 1)
    _undumpable()
    sys.stdout = sys.stderr = _Sink()
    emit = (lambda record: os.write(result_fd, (json.dumps(record) + "\n").encode()))
    cache = {}
    try:
        ready = link.ask(["ready"])
        if ready[0] == "load":
            emit([-1, ready[1], ready[2]])
            return
        for i, test in enumerate(job["tests"]):
            try:
                emit([i, *_run_test(link, test, job.get("entry_point"), cache)])
            except CandidateRaised as e:
                emit([i, "error", _describe(e)])
    except CandidateDied:
        emit([-2, "ended", _exit_code(child)])


def _exit_code(child):
    """How the candidate ended: exit code or minus the signal (SIGKILL when it had to be stopped)."""
    for _ in range(50):  # its pipe closed: it is ending (or sent a line too long to read)
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid:
            break
        time.sleep(0.01)
    else:
        os.kill(child, signal.SIGKILL)
        _, status = os.waitpid(child, 0)
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return -signal.SIGXCPU if code == 128 + signal.SIGXCPU else code


def _undumpable():
    """prctl(PR_SET_DUMPABLE, 0): a process of the same user cannot ptrace the judge or read its memory."""
    try:
        import ctypes
        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)
    except (OSError, AttributeError, ImportError):
        pass


def main():
    job_dir, result_fd, cand_uid, judge_uid, nproc = sys.argv[1], *map(int, sys.argv[2:6])
    requests_r, requests_w = os.pipe()
    replies_r, replies_w = os.pipe()
    child = os.fork()
    if child == 0:
        for fd in (result_fd, requests_w, replies_r):
            os.close(fd)
        candidate(job_dir, requests_r, replies_w, cand_uid, nproc)
        os._exit(0)
    for fd in (requests_r, replies_w):
        os.close(fd)
    judge(job_dir, result_fd, _Link(requests_w, replies_r), judge_uid, child)
    os.kill(child, signal.SIGKILL)


if __name__ == "__main__":
    main()
