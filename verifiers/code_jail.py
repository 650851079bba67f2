"""Linux namespaces for the code sandbox: a private root with no network and no run directories.

``enter_jail(root, job)`` runs in the sandbox's child between fork and exec,
as root. It unshares a mount, network, IPC and pid namespace, mounts a
size-capped tmpfs on ``root``, binds the system folders (read-only) and the
job folder into it, and chroots there. After exec the harness sees:

    /usr /bin /lib ... read-only binds of the host's system folders (the interpreter)
    /dev/null, /dev/zero, /dev/urandom   the only devices
    /job        read-only bind of the job folder (program, tests, harness)
    /tmp        the working directory, in the same tmpfs as the root

So every file the candidate writes is in one tmpfs of ``JAIL_BYTES`` (and at
most ``JAIL_FILES`` inodes) that exists only inside the namespace and is gone
when its last process ends; nothing else of the host's file system (run
directories, /root, /work, the host's /tmp) is reachable; the network
namespace has only a loopback that is down, so even 127.0.0.1 listeners of
the host are unreachable; and the harness's first child is pid 1 of a fresh
pid namespace, so ``kill(-1, 9)`` from the candidate reaches no process
outside it.

``jail_available()`` tries this once (in a throwaway child) and caches the
answer: it needs root (CAP_SYS_ADMIN) and a kernel that allows the
namespaces (containers often forbid them). When it is False the sandbox runs
without a jail; docs/tasks-and-verifiers.md lists what each protection falls
back to.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
from functools import cache

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWPID = 0x00020000, 0x08000000, 0x40000000, 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
JAIL_BYTES = 64 << 20  # the tmpfs holding everything the candidate writes
JAIL_FILES = 512  # its inode cap: a candidate cannot leave thousands of files
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(src: str | None, dst: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = (lambda s: s.encode() if s is not None else None)
    _check(_libc.mount(enc(src), enc(dst), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {dst}")


def _bind_readonly(src: str, dst: str) -> None:
    _mount(src, dst, None, MS_BIND | MS_REC)
    _mount(None, dst, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _populate(root: str, job: str, extra_dirs: tuple[str, ...]) -> None:
    """System folders (a symlink stays a symlink, e.g. /bin -> usr/bin), devices and the job."""
    for d in SYSTEM_DIRS + extra_dirs:
        if os.path.islink(d):
            os.symlink(os.readlink(d), root + d)
        elif os.path.isdir(d) and not os.path.exists(root + d):
            os.makedirs(root + d)
            _bind_readonly(d, root + d)
    os.mkdir(root + "/dev")
    for dev in DEVICES:
        open(root + dev, "w").close()
        _mount(dev, root + dev, None, MS_BIND)
    os.mkdir(root + "/job")
    _bind_readonly(job, root + "/job")
    os.mkdir(root + "/tmp")
    os.chmod(root + "/tmp", 0o1777)


def enter_jail(root: str, job: str, extra_dirs: tuple[str, ...] = ()) -> None:
    """Between fork and exec (as root): namespaces, the tmpfs root, chroot; see the module docstring.
    ``extra_dirs`` are more host folders to bind read-only (an interpreter outside /usr)."""
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWPID), "unshare")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing mounted here propagates to the host
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, f"size={JAIL_BYTES},nr_inodes={JAIL_FILES},mode=755")
    _populate(root, job, extra_dirs)
    os.chroot(root)
    os.chdir("/tmp")


@cache
def jail_available() -> bool:
    """Whether ``enter_jail`` works here (root and a kernel that allows the namespaces); tried once."""
    if os.geteuid() != 0 or not hasattr(_libc, "unshare"):
        return False
    import tempfile
    with tempfile.TemporaryDirectory(prefix="cst-jail-probe-") as tmp:
        os.mkdir(tmp + "/root")
        os.mkdir(tmp + "/job")
        try:
            subprocess.run(["/bin/true"], preexec_fn=lambda: enter_jail(tmp + "/root", tmp + "/job"),
                           check=True, timeout=10, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError):
            return False
    return True
