"""The pidfile, held with flock(2) for skiffd's lifetime so a second skiffd refuses to start.

A lock, not the pid's existence, decides: a stale file from a crash is no obstacle,
and pid reuse cannot fool it. The fd is close-on-exec, so services never inherit the lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from skiff.common.errors import FailedPrecondition

ALREADY_RUNNING = "DAEMON_ALREADY_RUNNING"


class PidFile:
    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise FailedPrecondition(
                f"another skiffd (pid {other}) is running: {self.path} is locked",
                reason=ALREADY_RUNNING, metadata={"pid": other},
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # while still locked: nobody can be holding the new one
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> PidFile:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
