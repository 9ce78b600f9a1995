"""Event-driven waits for a container's files and monitor: inotify plus a pidfd.

A follower of the log (``logs.read(..., wait=...)``) sleeps until the log's
directory changes (the shim appends; inotify reports IN_MODIFY for files in a
watched directory) or the monitor exits (its pidfd turns readable), instead of
polling on a timer. Every wait is still bounded by the caller's timeout, so a
missed event costs at most that.
"""

from __future__ import annotations

import ctypes
import os
import queue
import select
import threading
from pathlib import Path

IN_MODIFY = 0x002
IN_CLOSE_WRITE = 0x008
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_libc: ctypes.CDLL | None = None
# Closing an inotify instance waits for the kernel's fsnotify grace period (SRCU; up to ~20 ms
# here): it is handed to one background thread, so that a follower's stream ends at once.
_to_close: queue.SimpleQueue[int] = queue.SimpleQueue()
_closer: threading.Thread | None = None
_closer_lock = threading.Lock()


def _close_in_background(fd: int) -> None:
    global _closer
    with _closer_lock:
        if _closer is None:
            _closer = threading.Thread(target=_close_loop, name="inotify-closer", daemon=True)
            _closer.start()
    _to_close.put(fd)


def _close_loop() -> None:
    while True:
        fd = _to_close.get()
        try:
            os.close(fd)
        except OSError:
            pass


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


class Waiter:
    """Wakes on a change in ``directory`` or the exit of ``pid``; ``close()`` when done."""

    def __init__(self, directory: Path, pid: int = 0):
        self._fds: list[int] = []
        self._inotify = -1
        try:
            lib = _lib()
            fd = lib.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
            if fd >= 0:
                self._inotify = fd
                self._fds.append(fd)
                lib.inotify_add_watch(fd, os.fsencode(directory), IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE)
        except (OSError, AttributeError):
            pass
        if pid > 0:
            try:
                self._fds.append(os.pidfd_open(pid))
            except OSError:
                pass
        self._poll = select.poll()
        for fd in self._fds:
            self._poll.register(fd, select.POLLIN)

    def wait(self, seconds: float) -> bool:
        """Until something happened (True), at most ``seconds`` (False)."""
        if not self._fds:
            select.select([], [], [], seconds)
            return False
        ready = self._poll.poll(seconds * 1000)
        if any(fd == self._inotify for fd, _ in ready):
            try:
                while os.read(self._inotify, 65536):
                    pass
            except BlockingIOError:
                pass
        elif ready:  # the pidfd stays readable: from now on a plain sleep, the caller ends soon
            self._poll.unregister(ready[0][0])
            self._fds.remove(ready[0][0])
            os.close(ready[0][0])
        return bool(ready)

    def close(self) -> None:
        for fd in self._fds:
            if fd == self._inotify:
                _close_in_background(fd)
            else:
                os.close(fd)
        self._fds.clear()
        self._inotify = -1
