"""Give a forked service the command line and name it would have had if exec'd.

A service forked from skiffd's zygote inherits skiffd's ``/proc/<pid>/cmdline`` and
``comm``; ``ps``, ``pgrep -f skiff.graphsvc`` and the operators' habits expect
``python -m skiff.graphsvc …``. Without CAP_SYS_RESOURCE (PR_SET_MM) the only way is
setproctitle(3)'s: copy the environment strings elsewhere (``environ`` points at the
copies), then write the title over argv and the old environment, which are one
contiguous area. The kernel then reads the cmdline as one string up to its NUL.
Everything here is best effort: on any failure the title stays skiffd's.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

PR_SET_NAME = 15
_PAGE = 4096


def _areas() -> tuple[int, int, int, int]:
    """(arg_start, arg_end, env_start, env_end) of this process, from /proc/self/stat."""
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # Fields 48-51 of proc(5); fields[0] is field 3 (state).
    return int(fields[45]), int(fields[46]), int(fields[47]), int(fields[48])


def set_name(name: str) -> None:
    """``comm`` (what ``ps -e``, top and ``pgrep`` without -f show), at most 15 bytes."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


def set_cmdline(argv: list[str]) -> bool:
    """Make ``/proc/self/cmdline`` read as ``argv`` (space-joined if longer than skiffd's own)."""
    try:
        arg_start, arg_end, env_start, env_end = _areas()
        if not (0 < arg_start < arg_end <= env_start <= env_end):
            return False
        libc = ctypes.CDLL(None, use_errno=True)
        libc.strdup.restype = ctypes.c_void_p
        libc.strdup.argtypes = [ctypes.c_void_p]
        environ = ctypes.POINTER(ctypes.c_void_p).in_dll(libc, "environ")
        i = 0
        while environ[i]:
            ptr = environ[i]
            if env_start <= ptr < env_end:
                copy = libc.strdup(ptr)
                if not copy:
                    return False
                environ[i] = copy  # getenv() now reads the copy; the old area is free
            i += 1
        joined = b"\0".join(a.encode() for a in argv)
        room = arg_end - arg_start
        cap = min(env_end - arg_start, _PAGE) - 1  # the longest text that leaves room for its NUL
        if len(joined) < room:
            data = joined.ljust(room, b"\0")  # fits: argv as it was, NUL-separated
        elif cap >= room:
            # Longer than the original argv: one string running into the old environment
            # (a non-NUL last argv byte is the kernel's cue to read on, up to the NUL).
            data = b" ".join(a.encode() for a in argv)[:cap] + b"\0"
        else:
            data = joined[: room - 1] + b"\0"
        ctypes.memmove(arg_start, data, len(data))
        return True
    except (OSError, ValueError, IndexError, AttributeError) as err:
        log.debug("cannot set the command line: %s", err)
        return False
