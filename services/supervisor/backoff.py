"""Restart back-off: 100 ms, doubling, at most 10 s; forgiven once a run lasted 10 s."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Backoff:
    initial: float = 0.1
    maximum: float = 10.0
    #: A run at least this long counts as healthy: the next crash starts over at ``initial``.
    reset_after: float = 10.0
    _next: float = 0.0

    def __post_init__(self) -> None:
        self._next = self.initial

    def delay(self, uptime: float) -> float:
        """Seconds to wait before restarting a service that died after ``uptime`` seconds."""
        if uptime >= self.reset_after:
            self._next = self.initial
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay
