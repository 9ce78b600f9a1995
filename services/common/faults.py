"""Fault injection for the crash-safety tests (unset in normal use).

``SKIFF_CRASH_AT=<point>`` makes the process that reaches :func:`crash_point` with that name
SIGKILL itself there; ``SKIFF_CRASH_AT=<point>@<file>`` does it only while ``<file>`` does not
exist (it is created first), so the restarted service runs on.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

_SPEC = os.environ.get("SKIFF_CRASH_AT", "")
POINT, _, ONCE = _SPEC.partition("@")


def crash_point(name: str) -> None:
    if not POINT or name != POINT:
        return
    if ONCE:
        try:
            os.close(os.open(ONCE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            return
    log.critical("SKIFF_CRASH_AT=%s: killing %d", name, os.getpid())
    os.kill(os.getpid(), signal.SIGKILL)
