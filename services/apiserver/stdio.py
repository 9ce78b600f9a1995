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
* execsvc goes away (SIGKILL, restart): the upstream stream fails with a lost
  connection and is opened again once execsvc is back. An item leaves the buffer only
  when the gRPC sender asks for the next one (the previous send completed), so the one
  in flight when the connection broke is sent again on the new stream.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from skiff.common import detachkeys, errors, grpcerr
from skiff.exec.v1 import exec_pb2

log = logging.getLogger(__name__)
#: Buffered stdin requests (flow control: a process that does not read slows the client down).
MAX_PENDING = 64
#: How long a lost upstream stream is asked for again (skiffd restarts execsvc within seconds).
RESUME_SECONDS = 120.0
#: At a detach, how long the bytes typed before the keys may take to reach the process.
DRAIN_SECONDS = 2.0


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
        self._items: collections.deque[exec_pb2.AttachStdinRequest | None] = collections.deque()
        self._cond = threading.Condition()
        self._gen = 0  # the current upstream stream; older ones stop taking items
        self._sink: StdinSink | None = None
        self._stopped = threading.Event()
        self._lost_since: float | None = None  # when execsvc went away (None: connected)
        self._opened = 0.0  # when the current upstream stream was opened
        self.detached = threading.Event()

    def _upstream(self, gen: int) -> Iterator[exec_pb2.AttachStdinRequest]:
        yield exec_pb2.AttachStdinRequest(target=self._target)
        sent = False
        while True:
            with self._cond:
                if sent and self._gen == gen and self._items:
                    self._items.popleft()  # the sender asks for more: the previous one went out
                    self._cond.notify_all()
                sent = False
                while not self._items and self._gen == gen and not self._stopped.is_set():
                    self._cond.wait()
                if self._gen != gen or self._stopped.is_set():
                    return
                item = self._items[0]
            if item is None:
                return  # the client's EOF: the stream ends normally
            self._lost_since = None
            yield item
            sent = True

    def start(self, on_detach: Callable[[], None] | None = None) -> None:
        if on_detach is not None:
            self._on_detach = on_detach
        self._connect()
        threading.Thread(target=self._run, name="stdin-pump", daemon=True).start()

    def _connect(self) -> None:
        with self._cond:
            if self._stopped.is_set():
                return
            self._gen += 1
            gen = self._gen
            self._cond.notify_all()  # the previous stream's iterator ends
        self._opened = time.monotonic()
        sink = self._open(self._upstream(gen))
        self._sink = sink
        add = getattr(sink, "add_done_callback", None)
        if add is not None:
            add(lambda f: self._ended(f, gen))

    def _ended(self, future: Any, gen: int) -> None:
        """The upstream stream ended: open it again if execsvc went away under it."""
        if self._stopped.is_set() or gen != self._gen or future.cancelled():
            return
        err = future.exception()
        if err is None:
            return
        if not _lost(err):
            return
        now = time.monotonic()
        if self._lost_since is None or now - self._opened > 2.0:  # it had been working: a new outage
            self._lost_since = now
        if now - self._lost_since > RESUME_SECONDS:
            log.info("stdin pump: execsvc stayed away, giving up stdin")
            return

        def again() -> None:
            if not self._stopped.wait(0.1):
                self._connect()

        threading.Thread(target=again, name="stdin-resume", daemon=True).start()

    def _put(self, item: exec_pb2.AttachStdinRequest | None) -> bool:
        """Bounded: a process that does not read its stdin slows the client down (flow control)."""
        with self._cond:
            while len(self._items) >= MAX_PENDING and not self._stopped.is_set():
                self._cond.wait(0.5)
            if self._stopped.is_set():
                return False
            self._items.append(item)
            self._cond.notify_all()
            return True

    def _run(self) -> None:
        try:
            for req in self._requests:
                part = req.WhichOneof("part")
                if part == "stdin" and self._with_stdin:
                    data, detached = self._matcher.feed(req.stdin)
                    if data and not self._put(exec_pb2.AttachStdinRequest(data=data)):
                        return
                    if detached:
                        self._drain(DRAIN_SECONDS)  # what came before the keys reaches the process
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

    def _drain(self, timeout: float) -> None:
        """Wait (bounded) until the upstream stream has sent every queued item."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._items and not self._stopped.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)

    def stop(self) -> None:
        """Cancel the upstream stream: no EOF reaches the process (its stdin stays open)."""
        if self._stopped.is_set():
            return
        sink = self._sink
        if sink is not None:
            sink.cancel()  # first: the iterator ending below must not read as EOF
        self._stopped.set()
        if self._sink is not None and self._sink is not sink:  # reconnected meanwhile
            self._sink.cancel()
        with self._cond:
            self._cond.notify_all()  # unblock the (cancelled) upstream iterator


def _lost(err: BaseException) -> bool:
    """True when the upstream call failed because execsvc went away."""
    from skiff.apiserver import resume

    try:
        translated = grpcerr.from_rpc_error(err)  # type: ignore[arg-type]
    except Exception:  # not an RpcError
        return False
    return resume.lost(translated)
