"""Keep a long-running service's heap from holding on to memory it no longer uses.

- glibc gives each thread that allocates concurrently an arena of its own (up to 8 per
  core), and an arena keeps its freed memory. A service's gRPC threads (and a pull's
  download threads) would each leave one behind; two are enough for two cores' worth of
  contention. ``MALLOC_ARENA_MAX`` in the environment, if set, wins.
- ``malloc_trim`` hands the free pages of every arena back to the kernel; called after
  the few operations that allocate a lot at once (a pull, a load, an import).
"""

from __future__ import annotations

import collections
import ctypes
import itertools
import os
import threading
import weakref
from collections.abc import Callable
from concurrent import futures
from typing import Any

M_ARENA_MAX = -8
ARENAS = 2

_libc: ctypes.CDLL | None = None


def _c() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        try:
            libc = ctypes.CDLL(None)
            libc.mallopt  # noqa: B018 -- glibc, not musl
            libc.malloc_trim  # noqa: B018
        except (OSError, AttributeError):
            return None
        _libc = libc
    return _libc


def limit_arenas(count: int = ARENAS) -> None:
    """At most ``count`` malloc arenas from now on (call before threads start); no-op if set by the environment."""
    libc = _c()
    if libc is not None and not os.environ.get("MALLOC_ARENA_MAX"):
        libc.mallopt(M_ARENA_MAX, count)


def trim() -> None:
    """Give the heap's free pages back to the kernel."""
    libc = _c()
    if libc is not None:
        libc.malloc_trim(0)


class ElasticThreadPool(futures.Executor):
    """A ThreadPoolExecutor whose idle threads go away.

    ``concurrent.futures.ThreadPoolExecutor`` keeps every thread it ever started: after
    50 containers started at once, a service holds 50-90 idle threads with their stacks
    for good. Here a thread idle for ``idle_timeout`` seconds exits; the most recently
    idle thread takes the next call (so a steady trickle keeps one warm thread and lets
    the others go); past ``max_workers`` busy threads, calls queue as before. When threads
    leave after a burst, the heap is trimmed. Threads are not daemons, and are woken to
    leave when the interpreter exits, as ThreadPoolExecutor's.
    """

    def __init__(self, max_workers: int, thread_name_prefix: str = "", idle_timeout: float = 10.0,
                 on_idle: Callable[[], None] | None = trim):
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        self._max = max_workers
        self._prefix = thread_name_prefix or f"ElasticThreadPool-{id(self):x}"
        self._idle_timeout = idle_timeout
        self._on_idle = on_idle
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []  # a stack: the last one to go idle is woken first
        self._pending: collections.deque[_Item] = collections.deque()
        self._threads: set[threading.Thread] = set()
        self._names = itertools.count()
        self._shutdown = False
        self._ran = False  # calls ran since the last trim
        _live.add(self)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        future: futures.Future[Any] = futures.Future()
        item = (future, fn, args, kwargs)
        with self._lock:
            if self._shutdown or _exiting:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if self._idle:
                worker = self._idle.pop()
                worker.item = item
                worker.event.set()
            elif len(self._threads) < self._max:
                t = threading.Thread(target=self._work, args=(item,), name=f"{self._prefix}_{next(self._names)}")
                self._threads.add(t)
                t.start()
            else:
                self._pending.append(item)
        return future

    def _work(self, item: _Item | None) -> None:
        worker = _Worker()
        while item is not None:
            future, fn, args, kwargs = item
            item = None
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    future.set_exception(exc)
                    del exc
                else:
                    future.set_result(result)
                    del result
            del future, fn, args, kwargs
            item = self._next(worker)

    def _next(self, worker: _Worker) -> _Item | None:
        with self._lock:
            self._ran = True
            if self._pending:
                return self._pending.popleft()
            waiting = not (self._shutdown or _exiting)
            if waiting:
                worker.item = None
                worker.event.clear()
                self._idle.append(worker)
        if waiting:
            worker.event.wait(self._idle_timeout)
        with self._lock:
            if worker.item is not None:
                item, worker.item = worker.item, None
                return item
            if worker in self._idle:
                self._idle.remove(worker)
            self._threads.discard(threading.current_thread())
            trim_now, self._ran = self._ran and not self._shutdown, False
        if trim_now and self._on_idle is not None:
            self._on_idle()
        return None

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while self._pending:
                    self._pending.popleft()[0].cancel()
            for worker in self._idle:
                worker.event.set()
            threads = list(self._threads)
        if wait:
            for t in threads:
                if t is not threading.current_thread():
                    t.join()

    def __len__(self) -> int:
        """Threads alive now (for tests and the curious)."""
        with self._lock:
            return len(self._threads)


_Item = tuple["futures.Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class _Worker:
    __slots__ = ("event", "item")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.item: _Item | None = None


_live: weakref.WeakSet[ElasticThreadPool] = weakref.WeakSet()
_exiting = False


def _at_exit() -> None:
    """Interpreter exit: idle threads leave now, busy ones after their call (as ThreadPoolExecutor's)."""
    global _exiting
    _exiting = True
    for pool in list(_live):
        pool.shutdown(wait=True)


threading._register_atexit(_at_exit)  # type: ignore[attr-defined]
