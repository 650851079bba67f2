"""The code sandbox against candidates that try to forge a pass or reach outside (issue 11).

Each forging test uses tests the candidate cannot pass honestly (it computes
the wrong answer), so a "pass" verdict could only come from a forgery.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading

import pytest

from verifiers.code import Limits, run_tests
from verifiers.code_jail import jail_available

FAST = Limits(cpu_seconds=2, wall_seconds=4.0, memory_bytes=256 << 20)
TESTS = ["assert f(2) == 4", "assert f(3) == 6", "assert f(10) == 20"]
WRONG = "def f(x):\n    return x + 1\n"
jailed = pytest.mark.skipif(not (os.geteuid() == 0 and jail_available()),
                            reason="needs root and a kernel that allows mount/net/pid namespaces")

FORGERIES = {
    "records on every fd": WRONG + (
        "import os, json\n"
        "for fd in range(3, 32):\n"
        "    for i in range(-2, 4):\n"
        "        try:\n            os.write(fd, (json.dumps([i, 'pass', '']) + '\\n').encode())\n"
        "        except OSError:\n            pass\n"),
    "replaced harness functions": WRONG + (
        "import sys\n"
        "m = sys.modules['__main__']\n"
        "for name in dir(m):\n"
        "    if callable(getattr(m, name)) and not name.startswith('__'):\n"
        "        setattr(m, name, lambda *a, **k: ('pass', ''))\n"),
    "always-equal result": (
        "class Equal:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
        "def f(x):\n    return Equal()\n"),
    "patched builtins": WRONG + (
        "import builtins\nclass Never(Exception):\n    pass\nbuiltins.AssertionError = Never\n"),
    "forged lines then early exit": WRONG + (
        "import os, json\n"
        "for fd in range(3, 32):\n"
        "    try:\n        os.write(fd, b'[0, \"pass\", \"\"]\\n[1, \"pass\", \"\"]\\n[2, \"pass\", \"\"]\\n')\n"
        "    except OSError:\n        pass\n"
        "os._exit(0)\n"),
    "reads the tests for the expected values": (
        "import sys, json, re\n"
        "def f(x):\n"
        "    tests = json.load(open(sys.argv[1] + '/tests.json'))['tests']\n"
        "    for t in tests:\n"
        "        m = re.match(r'assert f\\((\\d+)\\) == (\\d+)', t)\n"
        "        if m and int(m.group(1)) == x:\n"
        "            return int(m.group(2))\n"),
    "repr that lies": (
        "class Liar(int):\n    def __eq__(self, other):\n        return True\n"
        "    def __repr__(self):\n        return 'Liar()'\n"
        "def f(x):\n    return Liar(x)\n"),
}


@pytest.mark.parametrize("trick", sorted(FORGERIES))
def test_a_candidate_cannot_report_pass_for_failing_tests(trick):
    v = run_tests(FORGERIES[trick], TESTS, FAST)
    assert v.status != "pass" and v.passed == 0, (trick, v)


@pytest.mark.parametrize("trick", ["records on every fd", "replaced harness functions", "patched builtins"])
def test_forging_fails_without_a_jail_too(trick):
    v = run_tests(FORGERIES[trick], TESTS, Limits(cpu_seconds=2, wall_seconds=4.0, jail=False))
    assert v.status != "pass" and v.passed == 0, (trick, v)


def test_an_honest_candidate_still_passes_with_and_without_a_jail():
    honest = "def f(x):\n    return 2 * x\n"
    assert run_tests(honest, TESTS, FAST).status == "pass"
    assert run_tests(honest, TESTS, Limits(cpu_seconds=2, wall_seconds=4.0, jail=False)).status == "pass"


@jailed
def test_no_file_is_left_in_tmp_and_the_size_is_capped():
    marker = f"cst-leftover-{os.getpid()}"
    program = (f"import os\nfor i in range(300):\n    open('/tmp/{marker}-%d' % i, 'w').write('x')\n"
               f"os.makedirs('/tmp/{marker}-dir/a/b', exist_ok=True)\n"
               "try:\n    open('big', 'wb').write(b'0' * (200 << 20))\nexcept OSError:\n    pass\n"
               "def f(x):\n    return 2 * x\n")
    v = run_tests(program, TESTS, Limits(cpu_seconds=4, wall_seconds=8.0, memory_bytes=512 << 20))
    assert v.status == "pass"
    assert not [n for n in os.listdir("/tmp") if n.startswith(marker)]


@jailed
def test_a_candidate_cannot_connect_to_a_local_listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted = []

    def accept():
        for _ in range(30):
            try:
                accepted.append(server.accept())
            except OSError:
                pass

    t = threading.Thread(target=accept)
    t.start()
    program = ("import socket\ndef f(x):\n    try:\n"
               f"        socket.create_connection(('127.0.0.1', {port}), timeout=1).close()\n"
               "        return 'connected'\n    except OSError:\n        return 'refused'\n")
    v = run_tests(program, ["assert f(0) == 'refused'"], FAST)
    t.join()
    server.close()
    assert v.status == "pass" and accepted == []


@jailed
def test_a_candidate_cannot_read_a_file_in_a_run_directory(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    for p in (run_dir, *run_dir.parents):  # readable by anyone on the host: only the jail hides it
        if p == p.parent:
            break
        if not (p.stat().st_mode & 0o005 == 0o005):
            os.chmod(p, p.stat().st_mode | 0o005)
    (run_dir / "run.sqlite").write_text("secret")
    os.chmod(run_dir / "run.sqlite", 0o644)
    program = (f"def f(x):\n    try:\n        return open({str(run_dir / 'run.sqlite')!r}).read()\n"
               "    except OSError:\n        return 'hidden'\n")
    assert run_tests(program, ["assert f(0) == 'hidden'"], FAST).status == "pass"


@jailed
def test_kill_minus_one_reaches_no_process_outside_the_sandbox():
    # a process of the candidate's own user: without a pid namespace kill(-1, 9) would reach it
    sleeper = subprocess.Popen(["/bin/sleep", "30"], user=65534,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        program = "import os, signal\ndef f(x):\n    try:\n        os.kill(-1, signal.SIGKILL)\n" \
                  "    except OSError:\n        pass\n    return 2 * x\n"
        run_tests(program, TESTS, FAST)
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()
