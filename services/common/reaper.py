"""Becoming a subreaper and reaping orphans.

skiff-shim monitors are orphaned on purpose (the caller must not be their
parent), so they are re-parented to the nearest subreaper, or to PID 1. On
hosts where PID 1 does not reap (containers, some sandboxes) the supervisor,
and the kernel tests, mark themselves subreaper and reap here.

Reap only where no other code waits for specific children at the same time
(``subprocess`` does): a blanket ``waitpid(-1)`` would steal their status.
The supervisor calls :func:`reap` from its SIGCHLD handling loop; tests call
it at teardown.
"""

from __future__ import annotations

import ctypes
import os

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper(on: bool = True) -> None:
    """Orphaned descendants (the shims) become our children instead of PID 1's.

    Where PID 1 does not reap (a container, a minimal init), they would otherwise stay
    zombies. ``on=False`` gives the role back (tests).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def reap() -> list[tuple[int, int]]:
    """Collects every exited child without blocking; returns (pid, wait status) pairs."""
    reaped = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        reaped.append((pid, status))
    return reaped
