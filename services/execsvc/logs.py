"""Reading the json-file log the shim writes (Docker's format, one JSON object per line).

Following a log ends once the container has exited *and* the file is
drained, so a client never misses the last lines and never hangs on a dead
container. Entries always carry their timestamp; whether to show it
(``docker logs -t``) is the caller's choice, see :func:`format_entry`.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from threading import Event
from typing import BinaryIO


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


def rotated(path: Path) -> list[Path]:
    """The rotated files of ``path`` (``<log>.1`` newest, ``<log>.2`` ...), newest first.

    With ``compress=true`` a rotated file is ``<log>.N.gz``; while the monitor is still
    gzipping it both names exist, and the plain one (complete) is the one listed."""
    path = Path(path)
    prefix = path.name + "."
    try:
        names = set(os.listdir(path.parent))
    except FileNotFoundError:
        return []
    found: dict[int, str] = {}
    for n in names:
        rest = n[len(prefix):] if n.startswith(prefix) else ""
        number = rest.removesuffix(".gz")
        if number.isdigit() and (rest == number or f"{prefix}{number}" not in names):
            found[int(number)] = n
    return [path.with_name(found[i]) for i in sorted(found)]


def open_log(p: Path) -> BinaryIO:
    """A log file for reading; a ``.gz`` one decompressed. A plain rotated file that its
    gzip just replaced is read from the archive."""
    if p.name.endswith(".gz"):
        return gzip.open(p, "rb")  # type: ignore[return-value]
    try:
        return open(p, "rb")
    except FileNotFoundError:
        gz = p.with_name(p.name + ".gz")
        if p.name.rpartition(".")[2].isdigit() and gz.exists():
            return gzip.open(gz, "rb")  # type: ignore[return-value]
        raise


def _key(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def open_all(path: Path) -> list[BinaryIO]:
    """The live log and its rotated files, open, oldest first.

    Opened newest first: a rotation between two opens renames an already-open
    file to the next name, which is then recognised (same inode) and skipped,
    so no file is read twice and only what rotation deleted is missed.
    """
    files: list[BinaryIO] = []
    seen: set[tuple[int, int]] = set()
    for p in [Path(path), *rotated(path)]:
        try:
            f = open(p, "rb") if p == Path(path) else open_log(p)  # noqa: SIM115 - closed by the caller
        except FileNotFoundError:
            continue  # the live file between rename and re-creation, or a rotated file removed meanwhile
        key = _key(os.fstat(f.fileno()))
        if key in seen:
            f.close()
            continue
        seen.add(key)
        files.append(f)
    files.reverse()
    return files


def _newer_than(path: Path, key: tuple[int, int]) -> list[Path]:
    """The files written after the one with ``key`` (an earlier live file), oldest first."""
    newer: list[Path] = []
    found = False
    files = rotated(path)
    for p in files:  # newest first
        try:
            if _key(os.stat(p)) == key:
                found = True
                break
        except FileNotFoundError:
            continue
        newer.append(p)
    if not found and any(p.name.endswith(".gz") for p in files):
        # gzip gave the earlier live file a new inode: it was (at least) the last rotation's.
        # (Several rotations between two looks lose the files in between, with compress only.)
        return [Path(path)]
    newer.reverse()
    return [*newer, Path(path)]


def read(
    path: Path,
    *,
    tail: int | None = None,
    follow: bool = False,
    is_running: Callable[[], bool] | None = None,
    stop: Event | None = None,
    poll_interval: float = 0.1,
    until_ns: int | None = None,
    wait: Callable[[float], object] | None = None,
) -> Iterator[LogEntry]:
    """Yields the entries of ``path`` and of its rotated files, oldest first; the last ``tail`` only when given.

    With ``follow``, keeps yielding new entries until ``stop`` is set, the wall
    clock passes ``until_ns``, or ``is_running()`` turns false and the rest of
    the log has been read. Following carries on into the new file after a
    rotation (and from the start after the truncation of a one-file log).
    ``wait(seconds)`` replaces the sleep between reads (e.g. an inotify wait that
    returns as soon as the log's directory changes).
    """
    path = Path(path)
    pause = wait or time.sleep
    if follow:
        while not path.exists():  # the shim creates it on start
            if (stop is not None and stop.is_set()) or (is_running is not None and not is_running()):
                return
            pause(poll_interval)
    files = open_all(path)
    if not files:
        return
    try:
        yield from _read_files(path, files, tail, follow, is_running, stop, poll_interval, until_ns, pause)
    finally:
        for f in files:
            f.close()


def _complete_lines(files: list[BinaryIO]) -> Iterator[bytes]:
    for i, f in enumerate(files):
        for line in f:
            if not line.endswith(b"\n"):
                if i == len(files) - 1:
                    f.seek(-len(line), os.SEEK_CUR)  # the writer is mid-line: the follow loop finishes it
                break
            yield line


def _read_files(
    path: Path, files: list[BinaryIO], tail: int | None, follow: bool, is_running: Callable[[], bool] | None,
    stop: Event | None, poll_interval: float, until_ns: int | None,
    pause: Callable[[float], object] = time.sleep,
) -> Iterator[LogEntry]:
    lines: Iterator[bytes] | deque[bytes] = _complete_lines(files)
    if tail is not None:
        lines = deque(lines, maxlen=max(tail, 0))
    for line in lines:
        entry = parse_line(line)
        if entry is not None:
            yield entry
    if not follow:
        return
    f = files[-1]
    pending = b""
    while True:
        if stop is not None and stop.is_set():
            return
        if until_ns is not None and time.time_ns() > until_ns:
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
        newer = _after_rotation(path, f)
        if newer is not None:
            # The writer finished with f before renaming it: what f still holds comes first.
            rest = pending + f.read()
            pending = b""
            for line in rest.splitlines(keepends=True):
                entry = parse_line(line)
                if entry is not None:
                    yield entry
            files.extend(newer)
            for g in newer[:-1]:  # several rotations since the last look: those files are complete
                for line in g:
                    entry = parse_line(line)
                    if entry is not None:
                        yield entry
            f = newer[-1]
            continue
        if not running:
            return
        pause(poll_interval)


def _after_rotation(path: Path, f: BinaryIO) -> list[BinaryIO] | None:
    """None while ``f`` is still the live file; after a rotation, the newer files, open, oldest first.

    After a truncation (a one-file log) ``f`` is rewound and None returned.
    """
    try:
        live = os.stat(path)
    except FileNotFoundError:
        return None  # mid-rotation: look again on the next round
    mine = os.fstat(f.fileno())
    if _key(live) == _key(mine):
        if live.st_size < f.tell():
            f.seek(0)
        return None
    out: list[BinaryIO] = []
    for p in _newer_than(path, _key(mine)):
        try:
            out.append(open_log(p))  # closed by read()
        except FileNotFoundError:
            continue
    return out or None
