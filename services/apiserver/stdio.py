"""The client's input of an attach or exec stream: stdin bytes, terminal sizes, detach keys.

The public request stream (AttachContainer, ExecContainer) is read by a thread of its
own while the response side streams output. Stdin goes through the detach-key matcher
and, with the resizes, in order to execsvc's AttachStdin, which writes them to the
monitor's socket. The flow:

    CLI --AttachContainer/ExecContainer--> gateway (this: detach keys) --AttachStdin--> execsvc --> monitor
        stdin, resize, (half-close = EOF)                                 target, data, resize    frames

* The client half-closes: the upstream stream ends normally, and execsvc closes the
  process's stdin if close_on_eof (stdin_once / exec).
* The detach keys: the upstream stream is cancelled (stdin stays open), the output
  stream is cancelled, and the response stream ends with ``detached``.
* The call ends any other way (the process exited, the client vanished): cancelled.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from skiff.common import detachkeys, errors
from skiff.exec.v1 import exec_pb2

log = logging.getLogger(__name__)


class StdinSink(Protocol):
    def cancel(self) -> bool: ...


def detach_sequence(keys: str) -> bytes:
    try:
        return detachkeys.parse(keys)
    except ValueError as err:
        raise errors.InvalidArgument(str(err)) from None


class Pump:
    """Copies ``requests`` (their ``stdin`` and ``resize`` parts) to ``open_upstream``'s stream."""

    def __init__(self, requests: Iterator[Any], target: exec_pb2.StdinTarget, keys: bytes,
                 open_upstream: Callable[[Iterator[exec_pb2.AttachStdinRequest]], StdinSink],
                 on_detach: Callable[[], None], with_stdin: bool = True):
        self._requests = requests
        self._target = target
        self._matcher = detachkeys.Matcher(keys)
        self._open = open_upstream
        self._on_detach = on_detach
        self._with_stdin = with_stdin
        self._queue: queue.Queue[exec_pb2.AttachStdinRequest | None] = queue.Queue(maxsize=64)
        self._sink: StdinSink | None = None
        self._stopped = threading.Event()
        self.detached = threading.Event()

    def _upstream(self) -> Iterator[exec_pb2.AttachStdinRequest]:
        yield exec_pb2.AttachStdinRequest(target=self._target)
        while (item := self._queue.get()) is not None:
            yield item

    def start(self, on_detach: Callable[[], None] | None = None) -> None:
        if on_detach is not None:
            self._on_detach = on_detach
        self._sink = self._open(self._upstream())
        threading.Thread(target=self._run, name="stdin-pump", daemon=True).start()

    def _put(self, item: exec_pb2.AttachStdinRequest | None) -> bool:
        """Bounded: a process that does not read its stdin slows the client down (flow control)."""
        while not self._stopped.is_set():
            try:
                self._queue.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for req in self._requests:
                part = req.WhichOneof("part")
                if part == "stdin" and self._with_stdin:
                    data, detached = self._matcher.feed(req.stdin)
                    if data and not self._put(exec_pb2.AttachStdinRequest(data=data)):
                        return
                    if detached:
                        self.detached.set()
                        self.stop()
                        self._on_detach()
                        return
                elif part == "resize" and not self._put(exec_pb2.AttachStdinRequest(resize=req.resize)):
                    return
            rest = self._matcher.flush()
            if rest:
                self._put(exec_pb2.AttachStdinRequest(data=rest))
            self._put(None)  # the client's EOF: the upstream stream ends normally
        except Exception as err:  # the call ended (the client left, the output ended)
            log.debug("stdin pump: %s", err)
            self.stop()

    def stop(self) -> None:
        """Cancel the upstream stream: no EOF reaches the process (its stdin stays open)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._sink is not None:
            self._sink.cancel()
        try:
            self._queue.put_nowait(None)  # unblock the (cancelled) upstream iterator
        except queue.Full:
            pass
