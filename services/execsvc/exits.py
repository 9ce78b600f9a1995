"""Task exits as they happen, for WatchTasks (the gateway's `die`/`oom` events).

One thread for all tasks: an epoll set of pidfds, one per running task's monitor (the
shim writes ``exit.json`` and then exits; should the monitor die first, the container's
init is watched instead). When one fires, the task's state is read from its bundle and,
if it has exited, a :class:`exec_pb2.TaskExit` goes to every subscriber's queue. Each
run is reported once (keyed by its finish time); a deletion reports an exit not yet seen
before the bundle goes (``Runtime.on_delete``). Nothing here is authoritative: a new
execsvc watches the tasks running when it starts; exits that happened while it was down
are for the caller to find (the first message of a watch lists the running tasks).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import select
import threading
from collections import OrderedDict
from typing import Any

from skiff.common import errors
from skiff.exec.v1 import exec_pb2

from .runtime import Runtime, _alive

log = logging.getLogger(__name__)
#: runs whose exit was reported (cid -> finished_at), the most recent
_REPORTED_KEPT = 4096


class ExitWatcher:
    def __init__(self, runtime: Runtime):
        self._rt = runtime
        self._lock = threading.Lock()
        self._ep = select.epoll()
        self._wake = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._ep.register(self._wake, select.EPOLLIN)
        self._fds: dict[int, str] = {}  # pidfd -> container id
        self._watched: dict[str, int] = {}  # container id -> pidfd
        self._subs: list[queue.SimpleQueue[exec_pb2.TaskExit]] = []
        self._reported: OrderedDict[str, str] = OrderedDict()
        self._closed = False
        self._thread: threading.Thread | None = None

    # --- set-up --------------------------------------------------------------

    def start(self) -> None:
        """Watch every task running now, then serve exits from one thread."""
        for cid in self._rt.list():
            with contextlib.suppress(errors.NotFound, OSError, ValueError, KeyError):
                if self._rt.state(cid).status == "running":
                    self.add(cid, report_exit=False)
        self._thread = threading.Thread(target=self._run, name="task-exits", daemon=True)
        self._thread.start()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        os.eventfd_write(self._wake, 1)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def add(self, cid: str, report_exit: bool = True) -> None:
        """Watch ``cid``'s current run (just started). ``report_exit``: if it has already ended,
        report it now."""
        started = self._started(cid)
        for pid_key, time_key in (("shim_pid", "shim_starttime"), ("pid", "pid_starttime")):
            pid = int(started.get(pid_key, 0))
            if pid <= 0:
                continue
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                continue
            # Opened first, checked second: the pid can't be reused while we hold the fd.
            if not _alive(pid, int(started.get(time_key, -2))):
                os.close(fd)
                continue
            with self._lock:
                old = self._watched.pop(cid, None)
                if old is not None:
                    self._forget(old)
                self._fds[fd] = cid
                self._watched[cid] = fd
                self._ep.register(fd, select.EPOLLIN)
            return
        if report_exit:
            self.check(cid)

    def _started(self, cid: str) -> dict[str, Any]:
        try:
            data = json.loads((self._rt.bundle(cid) / "start.json").read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError, errors.SkiffError):
            return {}

    def _forget(self, fd: int) -> None:
        """Under the lock."""
        self._fds.pop(fd, None)
        with contextlib.suppress(OSError):
            self._ep.unregister(fd)
        os.close(fd)

    # --- subscribers ---------------------------------------------------------

    def subscribe(self) -> tuple[list[str], queue.SimpleQueue[exec_pb2.TaskExit]]:
        """The tasks running now and a queue of the exits from now on."""
        q: queue.SimpleQueue[exec_pb2.TaskExit] = queue.SimpleQueue()
        with self._lock:
            self._subs.append(q)
            return sorted(self._watched), q

    def unsubscribe(self, q: queue.SimpleQueue[exec_pb2.TaskExit]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._subs.remove(q)

    # --- exits ---------------------------------------------------------------

    def reap(self, cid: str) -> None:
        """Before ``cid``'s bundle is deleted: report the exit of a run being watched (its monitor's
        pidfd may not have been read yet). An exit from before this execsvc is not reported."""
        with self._lock:
            watched = cid in self._watched
        if watched:
            self.check(cid)

    def check(self, cid: str) -> None:
        """Report ``cid``'s exit if its current run has ended and was not reported yet."""
        try:
            st = self._rt.state(cid)
        except (errors.SkiffError, OSError, ValueError, KeyError):
            return
        if st.status != "exited":
            return
        exit_ = exec_pb2.TaskExit(id=cid, exit_code=st.exit_code or 0, oom_killed=st.oom_killed)
        for field, text in (("started_at", st.started_at), ("finished_at", st.finished_at)):
            if text:
                with contextlib.suppress(ValueError):
                    getattr(exit_, field).FromJsonString(text)
        with self._lock:
            fd = self._watched.pop(cid, None)
            if fd is not None:
                self._forget(fd)
            if self._reported.get(cid) == st.finished_at + "|" + st.started_at:
                return
            self._reported[cid] = st.finished_at + "|" + st.started_at
            self._reported.move_to_end(cid)
            while len(self._reported) > _REPORTED_KEPT:
                self._reported.popitem(last=False)
            subs = list(self._subs)
        for q in subs:
            q.put(exit_)

    def _fired(self, fd: int) -> None:
        with self._lock:
            cid = self._fds.get(fd)
            if cid is None:
                return
            self._watched.pop(cid, None)
            self._forget(fd)
        try:
            status = self._rt.state(cid).status
        except (errors.SkiffError, OSError, ValueError, KeyError):
            return  # deleted meanwhile (its deletion reported the exit)
        if status == "running":  # the monitor died first: watch the container's init
            self.add(cid)
        else:
            self.check(cid)

    def _run(self) -> None:
        while not self._closed:
            try:
                ready = self._ep.poll()
            except InterruptedError:
                continue
            for fd, _ in ready:
                if fd == self._wake:
                    with contextlib.suppress(BlockingIOError):
                        os.eventfd_read(self._wake)
                    continue
                try:
                    self._fired(fd)
                except Exception:
                    log.exception("reading a task's exit failed")
        with self._lock:
            for fd in list(self._fds):
                self._forget(fd)
            self._watched.clear()

