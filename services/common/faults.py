"""Fault injection for the crash-safety tests (unset in normal use: one dict lookup).

With ``SKIFF_CRASH_FILE=<path>`` in the environment of the services, a process that reaches
``crash_point(name)`` while ``<path>`` holds ``name`` removes the file (so it fires once, in
one process) and SIGKILLs itself there: a test writes the file, then drives the engine.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

_FILE = os.environ.get("SKIFF_CRASH_FILE", "")


def crash_point(name: str) -> None:
    if not _FILE:
        return
    try:
        with open(_FILE) as f:
            if f.read().strip() != name:
                return
        os.unlink(_FILE)  # atomic: only one process fires
    except FileNotFoundError:
        return
    log.critical("crash point %s (SKIFF_CRASH_FILE): killing %d", name, os.getpid())
    os.kill(os.getpid(), signal.SIGKILL)
