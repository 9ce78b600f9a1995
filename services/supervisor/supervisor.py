"""Start services in order, keep them up, stop them in reverse order.

Life of one service::

    spawn ──► starting ──(health SERVING)──► serving
      ▲           │ died / not serving in time    │ died
      │           ▼                               ▼
      └──(back-off elapsed)── waiting ◄───────────┘

The loop runs on one thread. It never blocks longer than until the next
deadline (a back-off ending, a probe due), and is woken early when a service
exits (a pidfd per service) or by :meth:`wake` (the SIGCHLD / SIGTERM handlers
in ``main`` call it; SIGCHLD matters for orphans, which have no pidfd). Signals are only ever
sent to single pids: services and containers' monitors have their own
process groups and sessions, and stopping skiffd must not touch containers.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

from skiff.common.server import sd_notify
from skiff.common.tls import TLSFiles
from skiff.supervisor import health, process
from skiff.supervisor.backoff import Backoff

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    argv: list[str]
    #: Address probed for grpc.health.v1 (unix:// or tcp://).
    socket: str
    tls: TLSFiles | None = None


@dataclass
class _Child:
    spec: ServiceSpec
    backoff: Backoff
    pid: int | None = None
    #: Becomes readable when the process exits: wakes the loop without relying on SIGCHLD.
    pidfd: int | None = None
    started_at: float = 0.0
    serving: bool = False
    ready_deadline: float = 0.0
    restart_at: float | None = None
    last_probe: float = field(default=-1e9)


def _close_all(selector: selectors.BaseSelector, *fds: int) -> None:
    selector.close()
    for fd in fds:
        os.close(fd)


class StartupError(Exception):
    """A service died or did not serve in time while skiffd was starting."""


class Supervisor:
    def __init__(
        self,
        specs: list[ServiceSpec],
        *,
        clock: Callable[[], float] = time.monotonic,
        probe: Callable[[ServiceSpec], bool] = lambda s: health.probe(s.socket, 0.5, s.tls),
        spawn: Callable[[list[str]], int] = process.spawn,
        kill: Callable[[int, int], None] = os.kill,
        start_timeout: float = 20.0,
        stop_timeout: float = 10.0,
        probe_interval: float = 0.05,
        idle_interval: float = 1.0,
        backoff: Callable[[], Backoff] = Backoff,
    ):
        self.children = [_Child(s, backoff()) for s in specs]
        self.clock, self.probe, self.spawn, self.kill = clock, probe, spawn, kill
        self.start_timeout, self.stop_timeout = start_timeout, stop_timeout
        self.probe_interval, self.idle_interval = probe_interval, idle_interval
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._rfd, self._wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._rfd, selectors.EVENT_READ)
        # Closed only when the object goes: a late wake() from a signal handler must
        # never write into a reused descriptor.
        weakref.finalize(self, _close_all, self._selector, self._rfd, self._wfd)

    # -- called from signal handlers or other threads -------------------------------------------

    def wake(self) -> None:
        try:
            os.write(self._wfd, b"x")
        except BlockingIOError:
            pass  # already pending

    def request_stop(self) -> None:
        self._stop.set()
        self.wake()

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> int:
        """Start all, supervise until asked to stop, stop all. 0 on a clean stop, 1 if start-up failed."""
        try:
            try:
                self._start_all()
            except StartupError as err:
                log.error("start-up failed: %s", err)
                return 1
            if self._stop.is_set():
                return 0
            log.info("all services serving")
            self.ready.set()
            sd_notify("READY=1")
            while not self._stop.is_set():
                self._step()
            sd_notify("STOPPING=1")
            return 0
        finally:
            self._stop_all()

    def pid_of(self, name: str) -> int | None:
        return next(c.pid for c in self.children if c.spec.name == name)

    def _start_all(self) -> None:
        for child in self.children:
            self._spawn(child)
            while not self._stop.is_set():
                self._reap()
                if child.pid is None:
                    raise StartupError(f"{child.spec.name} exited before serving (see its log above)")
                if self._check(child):
                    break
                if self.clock() > child.ready_deadline:
                    raise StartupError(
                        f"{child.spec.name} is not serving on {child.spec.socket} after {self.start_timeout:g}s"
                    )
                self._wait(self.probe_interval)
            else:
                return

    def _step(self) -> None:
        self._reap()
        now = self.clock()
        for child in self.children:
            if child.pid is None and child.restart_at is not None and now >= child.restart_at:
                self._spawn(child)
            elif child.pid is not None and not child.serving:
                if self._check(child):
                    log.info("%s (pid %d) is serving again", child.spec.name, child.pid)
                elif now > child.ready_deadline:
                    log.error("%s (pid %d) not serving after %gs: killing it",
                              child.spec.name, child.pid, self.start_timeout)
                    self.kill(child.pid, signal.SIGKILL)  # reaped and restarted with back-off
        self._wait(self._next_timeout())

    def _next_timeout(self) -> float:
        now = self.clock()
        timeout = self.idle_interval
        for child in self.children:
            if child.restart_at is not None:
                timeout = min(timeout, max(0.0, child.restart_at - now))
            elif child.pid is not None and not child.serving:
                timeout = min(timeout, self.probe_interval)
        return timeout

    def _wait(self, timeout: float) -> None:
        for key, _ in self._selector.select(timeout):
            if key.fd == self._rfd:
                try:
                    while os.read(self._rfd, 512):
                        pass
                except BlockingIOError:
                    pass

    def _spawn(self, child: _Child) -> None:
        child.pid = self.spawn(child.spec.argv)
        try:
            child.pidfd = os.pidfd_open(child.pid)
            self._selector.register(child.pidfd, selectors.EVENT_READ)
        except (OSError, AttributeError, ValueError):
            child.pidfd = None  # old kernel or a fake pid: SIGCHLD and the tick will do
        child.started_at = self.clock()
        child.ready_deadline = child.started_at + self.start_timeout
        child.serving = False
        child.restart_at = None
        log.info("started %s (pid %d)", child.spec.name, child.pid)

    def _check(self, child: _Child) -> bool:
        child.serving = self.probe(child.spec)
        return child.serving

    def _reap(self) -> None:
        for pid, status in process.reap():
            child = next((c for c in self.children if c.pid == pid), None)
            if child is None:
                log.debug("reaped pid %d (%s)", pid, process.describe(status))
                continue
            now = self.clock()
            uptime = now - child.started_at
            child.pid, child.serving = None, False
            if child.pidfd is not None:
                self._selector.unregister(child.pidfd)
                os.close(child.pidfd)
                child.pidfd = None
            if self._stop.is_set() or not self.ready.is_set():
                # Stopping, or starting (where a death fails start-up): no restart.
                log.info("%s (pid %d) %s", child.spec.name, pid, process.describe(status))
                continue
            delay = child.backoff.delay(uptime)
            child.restart_at = now + delay
            log.warning("%s (pid %d) %s after %.1fs; restarting in %.1fs",
                        child.spec.name, pid, process.describe(status), uptime, delay)

    def _stop_all(self) -> None:
        """Stop in reverse start order, one at a time: the gateway goes first, the graph last."""
        self._stop.set()
        for child in reversed(self.children):
            child.restart_at = None
            if child.pid is None:
                continue
            pid = child.pid
            log.info("stopping %s (pid %d)", child.spec.name, pid)
            for sig, timeout in ((signal.SIGTERM, self.stop_timeout), (signal.SIGKILL, 5.0)):
                try:
                    self.kill(pid, sig)
                except ProcessLookupError:
                    pass
                deadline = self.clock() + timeout
                while child.pid is not None and self.clock() < deadline:
                    self._reap()
                    if child.pid is not None:
                        self._wait(0.02)
                if child.pid is None:
                    break
                if sig == signal.SIGTERM:
                    log.warning("%s (pid %d) ignored SIGTERM for %gs: killing it", child.spec.name, pid, timeout)
            else:
                log.error("%s (pid %d) survived SIGKILL", child.spec.name, pid)
