"""Adapters between gRPC streams and file objects."""

from __future__ import annotations

import io
from collections.abc import Iterator

#: Trailing metadata of a followed ReadLogs (exec.v1) that ended at the task's exit.
EXIT_CODE_KEY = "skiff-exit-code"
OOM_KILLED_KEY = "skiff-oom-killed"


class ChunkReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks (a client-streaming upload).

    Nothing is buffered beyond the current chunk, so a large upload is never
    held in memory whole.
    """

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._buf = b""
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buf and not self._eof:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                self._eof = True
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def reader(chunks: Iterator[bytes], buffer_size: int = 1 << 20) -> io.BufferedReader:
    return io.BufferedReader(ChunkReader(chunks), buffer_size)
