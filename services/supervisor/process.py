"""Child processes of skiffd: spawn without fork(), reap everything, become a subreaper."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import signal
from collections.abc import Iterator

PR_SET_CHILD_SUBREAPER = 36

_SETPRIV = shutil.which("setpriv")


def become_subreaper() -> None:
    """Orphans below us (container monitors whose execsvc died) re-parent to us, not to PID 1.

    Where PID 1 does not reap (a container, a minimal init), they would otherwise
    stay zombies; and we can log them.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def spawn(argv: list[str]) -> int:
    """Start a service; return its pid.

    posix_spawn (vfork+exec) rather than fork: skiffd has grpc threads (health probes).
    Each service gets its own process group, so a terminal's Ctrl-C reaches only
    skiffd, which then stops services in order. ``setpriv --pdeathsig TERM`` makes a
    service stop if skiffd itself is killed, so a new skiffd never finds a stray
    graphsvc writing the same database.
    """
    if _SETPRIV:
        argv = [_SETPRIV, "--pdeathsig", "TERM", "--", *argv]
    return os.posix_spawn(argv[0], argv, os.environ, setpgroup=0)


def reap() -> Iterator[tuple[int, int]]:
    """(pid, wait status) of every child that has exited, without blocking."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, status


def describe(status: int) -> str:
    """'exited with status 3' / 'was killed by SIGKILL', for the log."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"
