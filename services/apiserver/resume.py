"""Streams from execsvc that ride over its restart (SIGKILL, crash, upgrade).

execsvc keeps nothing in memory: the log and the exit status are on disk, and the
container's monitor keeps writing them while execsvc is down. So a stream cut by a
lost connection is simply asked for again, and what the client already has is
skipped: for a log, by time (``since`` = the last delivered entry's time, minus the
entries already delivered with that very time); for an exec, whose stream always
starts at the beginning, by count.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from skiff.apiserver.backends import ExecBackend, LogStream
from skiff.apiserver.callctx import Call
from skiff.common import errors
from skiff.exec.v1 import exec_pb2
from skiff.types.v1 import types_pb2

T = TypeVar("T")
#: How gRPC reports a server that went away in the middle of a call (UNKNOWN/INTERNAL
#: without skiff's ErrorInfo); skiff's own errors always carry a reason of their own.
_TRANSPORT = ("Stream removed", "Socket closed", "RST_STREAM", "Connection reset")
#: Reconnections per stream before giving up (skiffd restarts a service within seconds).
MAX_RESUMES = 100


def lost(err: errors.SkiffError) -> bool:
    """True when the call failed because execsvc went away (ask again once it is back)."""
    if isinstance(err, errors.Unavailable):
        return True
    return isinstance(err, errors.Internal) and any(t in str(err) for t in _TRANSPORT)


def retrying(fn: Callable[[], T], call: Call | None, until: float | None = None) -> T:
    """``fn()``, asked again while execsvc is away (up to the call's deadline, or ``until``)."""
    for _ in range(10_000):
        try:
            return fn()
        except errors.SkiffError as e:
            if not lost(e) or (call is not None and call.cancelled):
                raise
            if until is not None and time.monotonic() >= until:
                raise errors.DeadlineExceeded("execsvc was away until the deadline") from None
            if call is not None:
                if not call.sleep(0.1):
                    raise
            else:
                time.sleep(0.1)
    raise errors.Unavailable("execsvc did not come back")


def _key(ts: types_pb2.LogEntry) -> tuple[int, int]:
    return ts.time.seconds, ts.time.nanos


class ResumingLogs:
    """A LogStream over ReadLogs that reconnects after a lost connection."""

    def __init__(self, exec_: ExecBackend, req: exec_pb2.ReadLogsRequest, call: Call):
        self._exec, self._req, self._call = exec_, req, call
        self._stream: LogStream | None = None
        self._started = time.time_ns()
        self._ended = False  # the last upstream stream ended by itself
        self._gen = self._entries()

    def __iter__(self) -> Iterator[types_pb2.LogEntry]:
        return self

    def __next__(self) -> types_pb2.LogEntry:
        return next(self._gen)

    def cancel(self) -> None:
        if self._stream is not None:
            self._stream.cancel()

    def exit_status(self) -> exec_pb2.WaitTaskResponse | None:
        """After a follow that ended by itself: the task's exit, if execsvc sent it along."""
        status = getattr(self._stream, "exit_status", None) if self._ended else None
        return status() if status is not None else None

    def _entries(self) -> Iterator[types_pb2.LogEntry]:
        req = self._req
        last: tuple[int, int] | None = None
        same = 0  # entries delivered with time == last
        for _ in range(MAX_RESUMES):
            skip = same
            self._stream = self._exec.read_logs(req, self._call)
            try:
                for entry in self._stream:
                    if last is not None and skip:
                        k = _key(entry)
                        if k < last:
                            continue
                        if k == last:
                            skip -= 1
                            continue
                        skip = 0
                    k = _key(entry)
                    same = same + 1 if k == last else 1
                    last = k
                    yield entry
                self._ended = True
                return
            except errors.SkiffError as e:
                if not lost(e) or self._call.cancelled:
                    raise
                self._stream.cancel()
                if not self._call.sleep(0.1):
                    return
            if last is None and not (self._req.HasField("tail") and self._req.tail == 0):
                continue  # nothing delivered yet: the same request again
            # From the last delivered time on (or, for a stream of new output only, from
            # when it was opened); the tail was applied already.
            req = exec_pb2.ReadLogsRequest()
            req.CopyFrom(self._req)
            req.ClearField("tail")
            req.since.seconds, req.since.nanos = last if last is not None else divmod(self._started, 10**9)
        raise errors.Unavailable("execsvc kept going away: giving up the log stream")


def attach_exec(exec_: ExecBackend, task_id: str, exec_id: str, call: Call
                ) -> Iterator[exec_pb2.AttachExecResponse]:
    """AttachExec, asked again after a lost connection; the replayed output is skipped."""
    delivered = 0
    for _ in range(MAX_RESUMES):
        seen = 0
        try:
            for resp in exec_.attach_exec(task_id, exec_id, call):
                if resp.WhichOneof("part") == "output":
                    seen += 1
                    if seen <= delivered:
                        continue
                    delivered += 1
                yield resp
            return
        except errors.SkiffError as e:
            if not lost(e) or call.cancelled:
                raise
            if not call.sleep(0.1):
                return
    raise errors.Unavailable("execsvc kept going away: giving up the exec stream")
