"""Reading the json-file log the shim writes (Docker's format, one JSON object per line).

Following a log ends once the container has exited *and* the file is
drained, so a client never misses the last lines and never hangs on a dead
container. Entries always carry their timestamp; whether to show it
(``docker logs -t``) is the caller's choice, see :func:`format_entry`.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from threading import Event


@dataclass(frozen=True)
class LogEntry:
    stream: str  # "stdout" | "stderr"
    data: bytes
    time: str  # RFC 3339 with nanoseconds, UTC


def parse_line(line: bytes) -> LogEntry | None:
    """One log line; None for a line that is not a complete entry (torn or foreign)."""
    try:
        obj = json.loads(line)
        return LogEntry(obj["stream"], obj["log"].encode(), obj["time"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def format_entry(entry: LogEntry, timestamps: bool = False) -> bytes:
    return (entry.time.encode() + b" " + entry.data) if timestamps else entry.data


def read(
    path: Path,
    *,
    tail: int | None = None,
    follow: bool = False,
    is_running: Callable[[], bool] | None = None,
    stop: Event | None = None,
    poll_interval: float = 0.1,
    wait: Callable[[float], object] | None = None,
) -> Iterator[LogEntry]:
    """Yields the entries of ``path``; the last ``tail`` only when given.

    With ``follow``, keeps yielding new entries until ``stop`` is set or
    ``is_running()`` turns false and the rest of the file has been read.
    ``wait(seconds)`` replaces the sleep between reads (e.g. an inotify wait that
    returns as soon as the file grows).
    """
    pause = wait or time.sleep
    if follow:
        while not Path(path).exists():  # the shim creates it on start
            if (stop is not None and stop.is_set()) or (is_running is not None and not is_running()):
                return
            pause(poll_interval)
    elif not Path(path).exists():
        return
    with open(path, "rb") as f:
        lines: Iterator[bytes] | deque[bytes] = f if tail is None else deque(f, maxlen=max(tail, 0))
        pending = b""
        for line in lines:
            if not line.endswith(b"\n"):
                pending = line  # the writer is mid-line: finish it in the follow loop
                break
            entry = parse_line(line)
            if entry is not None:
                yield entry
        if not follow:
            return
        while True:
            if stop is not None and stop.is_set():
                return
            # Check before reading: an exit observed here means everything the
            # container wrote is already in the file, so one more read drains it.
            running = is_running() if is_running is not None else True
            chunk = f.readline()
            while chunk:
                pending += chunk
                if not pending.endswith(b"\n"):
                    break
                entry = parse_line(pending)
                pending = b""
                if entry is not None:
                    yield entry
                chunk = f.readline()
            if not running:
                return
            pause(poll_interval)
