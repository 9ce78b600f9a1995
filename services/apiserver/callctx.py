"""The caller's deadline and cancellation, carried into the domain code.

Long-blocking public calls (wait, logs --follow, attach) must end when their
caller goes away or its deadline passes, otherwise every abandoned ``skiff
wait`` would pin a gateway thread until the container exits. The servicer turns
its grpc context into a :class:`Call`; the domain code waits through it and
registers hooks that cancel upstream calls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import grpc

#: A remaining time above this means "no deadline" (grpc reports ~infinity).
_NO_DEADLINE = 1e8


class Call:
    """Deadline plus cancellation of one public call. ``Call()`` never expires."""

    def __init__(self, timeout: float | None = None):
        self._end = None if timeout is None else time.monotonic() + timeout
        self._event = threading.Event()
        self._hooks: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    @classmethod
    def from_context(cls, context: grpc.ServicerContext) -> Call:
        remaining = context.time_remaining()
        call = cls(None if remaining is None or remaining > _NO_DEADLINE else remaining)
        context.add_callback(call.cancel)  # runs when the RPC ends, for any reason
        return call

    def remaining(self, cap: float | None = None) -> float | None:
        """Seconds left (never negative), at most ``cap``; None when unbounded."""
        left = None if self._end is None else max(self._end - time.monotonic(), 0.0)
        if cap is None:
            return left
        return cap if left is None else min(left, cap)

    def expired(self) -> bool:
        return self._event.is_set() or (self._end is not None and time.monotonic() >= self._end)

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            hook()

    def on_cancel(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` when the call is cancelled (at once if it already is)."""
        with self._lock:
            if not self._event.is_set():
                self._hooks.append(hook)
                return
        hook()

    def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds`` (less near the deadline); False once the call is over."""
        if self._event.wait(self.remaining(seconds)):
            return False
        return not self.expired()
