"""Child processes of skiffd: spawn without fork(), reap everything, become a subreaper."""

from __future__ import annotations

import os
import shutil
import signal

from skiff.common.reaper import become_subreaper, reap

_SETPRIV = shutil.which("setpriv")


def spawn(argv: list[str]) -> int:
    """Start a service; return its pid.

    posix_spawn (vfork+exec): the way when skiffd cannot fork a service from itself
    (zygote.py: not one of ours, ``SKIFF_ZYGOTE=0``, or skiffd not fork-safe any more).
    Each service gets its own process group, so a terminal's Ctrl-C reaches only
    skiffd, which then stops services in order. ``setpriv --pdeathsig TERM`` makes a
    service stop if skiffd itself is killed, so a new skiffd never finds a stray
    graphsvc writing the same database.
    """
    if _SETPRIV:
        argv = [_SETPRIV, "--pdeathsig", "TERM", "--", *argv]
    return os.posix_spawn(argv[0], argv, os.environ, setpgroup=0)


def describe(status: int) -> str:
    """'exited with status 3' / 'was killed by SIGKILL', for the log."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


__all__ = ["become_subreaper", "describe", "reap", "spawn"]
