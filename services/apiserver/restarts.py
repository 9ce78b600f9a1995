"""The restart manager: restart policies (`--restart`), driven by the gateway.

Why here: a restart is a start, and a start goes through the gateway (record and
root filesystem from graphsvc, endpoint from netsvc, task from execsvc). The
gateway keeps no state of its own, so everything the manager must remember is
stored with the container's record in graphsvc (``graph.v1.RestartState``) and
read back after any restart of any service:

* an exit is known by the start time of the run that ended; the decision about
  it (restart or not, the count, the back-off, when) is written *before* the
  restart is done, so an exit is counted once and a crash between the two steps
  is finished by the next gateway (``pending``), never repeated;
* exits are learned from execsvc (``WaitTask``, whose answer is on disk, so an
  execsvc restart loses none), one watcher per running container with a policy,
  and by a sweep when the gateway starts (exits that happened while it was down);
* a manual stop or kill (SIGKILL, SIGTERM or the container's stop signal) is recorded before the signal is
  sent; for ``always`` it holds only while the daemon instance that saw it runs
  (``--daemon-id``, new for every skiffd start), so ``always`` containers come
  back after a restart of the whole daemon and ``unless-stopped`` ones do not.

Docker's rules: back-off 100 ms doubling to 1 min, back to 100 ms when the run
lasted 10 s or more; ``on-failure[:N]`` only on a non-zero exit and at most N
times; a manual start resets the count and the stop flag.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from google.protobuf import timestamp_pb2

from skiff.apiserver.views import is_live, restarting
from skiff.common import errors
from skiff.exec.v1 import exec_pb2
from skiff.graph.v1 import graph_pb2

if TYPE_CHECKING:
    from skiff.apiserver.backends import ExecBackend, GraphBackend
    from skiff.apiserver.containers import Containers

log = logging.getLogger(__name__)

INITIAL_BACKOFF_MS = 100
MAX_BACKOFF_MS = 60_000
#: A run at least this long resets the back-off.
RESET_AFTER_S = 10.0
#: Retry delay when a backend is unavailable (it is being restarted by skiffd).
RETRY_S = 1.0


def policy_of(record: graph_pb2.Container) -> str:
    name = record.host_config.restart_policy.name
    return "" if name in ("", "no") else name


def _seconds(ts: timestamp_pb2.Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def decide(record: graph_pb2.Container, exit_code: int, ran_s: float, daemon_id: str) -> tuple[bool, int]:
    """(restart?, the new back-off in ms) for an exit, from the policy and the stored state."""
    policy = policy_of(record)
    st = record.restart_state
    backoff = 0 if ran_s >= RESET_AFTER_S else st.backoff_ms
    backoff = INITIAL_BACKOFF_MS if backoff <= 0 else min(backoff * 2, MAX_BACKOFF_MS)
    if not policy or st.manually_stopped:
        return False, backoff
    if policy in ("always", "unless-stopped"):
        return True, backoff
    most = record.host_config.restart_policy.maximum_retry_count
    return exit_code != 0 and (most == 0 or st.restart_count < most), backoff


class Restarter:
    """Watches containers with a restart policy and restarts them through ``Containers``."""

    def __init__(self, containers: Containers, daemon_id: str = "", *, clock: Callable[[], float] = time.time,
                 watch_interval: float = 30.0):
        self._c = containers
        self.daemon_id = daemon_id
        self._clock = clock
        self._watch_interval = watch_interval
        self._guard = threading.Lock()
        self._locks: dict[str, threading.RLock] = {}
        self._watching: set[str] = set()
        self._timers: dict[str, threading.Timer] = {}

    @property
    def _graph(self) -> GraphBackend:
        return self._c._graph

    @property
    def _exec(self) -> ExecBackend:
        return self._c._exec

    @property
    def _closed(self) -> threading.Event:
        return self._c._closed

    @contextmanager
    def locked(self, cid: str) -> Iterator[None]:
        """One decision, start, stop or removal of a container at a time."""
        with self._guard:
            lock = self._locks.setdefault(cid, threading.RLock())
        with lock:
            yield

    def _task(self, cid: str) -> exec_pb2.Task | None:
        try:
            return self._exec.get_task(cid)
        except errors.NotFound:
            return None

    def _save(self, cid: str, st: graph_pb2.RestartState) -> None:
        self._graph.set_restart_state(cid, st)

    # --- hooks called by Containers ------------------------------------------------------

    def manual_start(self, record: graph_pb2.Container) -> None:
        """Before a start by the user: the count, back-off and stop flag start again."""
        if record.HasField("restart_state") and record.restart_state != graph_pb2.RestartState():
            self._cancel_timer(record.id)
            self._save(record.id, graph_pb2.RestartState())
            record.ClearField("restart_state")

    def started(self, record: graph_pb2.Container) -> None:
        if policy_of(record):
            self.watch(record.id)

    def manual_stop(self, record: graph_pb2.Container) -> None:
        """Before a stop, a kill (SIGKILL/SIGTERM/the stop signal) or a forced removal: no restart follows."""
        if not policy_of(record) and not record.restart_state.pending:
            return
        self._cancel_timer(record.id)
        st = graph_pb2.RestartState()
        st.CopyFrom(record.restart_state)
        st.manually_stopped, st.stopped_by_daemon, st.pending = True, self.daemon_id, False
        if st != record.restart_state:
            self._save(record.id, st)
            record.restart_state.CopyFrom(st)

    def policy_changed(self, cid: str) -> None:
        """After `update --restart`: watch a running container that now has a policy."""
        try:
            record = self._graph.get_container(cid)
        except errors.NotFound:
            return
        if policy_of(record) and is_live(self._task(cid)):
            self.watch(cid)

    # --- exits ---------------------------------------------------------------------------

    def watch(self, cid: str) -> None:
        with self._guard:
            if cid in self._watching or self._closed.is_set():
                return
            self._watching.add(cid)
        threading.Thread(target=self._watch_loop, args=(cid,), name=f"restart-{cid[:12]}", daemon=True).start()

    def _watch_loop(self, cid: str) -> None:
        exited = False
        try:
            while not self._closed.is_set():
                try:
                    self._exec.wait_task(cid, timeout=self._watch_interval)
                except errors.DeadlineExceeded:
                    continue
                except (errors.NotFound, errors.FailedPrecondition):
                    return  # removed, or never ran
                except errors.Unavailable:
                    self._closed.wait(RETRY_S)
                    continue
                exited = True
                return
        except Exception:
            log.exception("watching %s for its restart policy failed", cid)
        finally:
            with self._guard:
                self._watching.discard(cid)
            if exited:
                self._handle_retrying(cid)

    def _handle_retrying(self, cid: str) -> None:
        while not self._closed.is_set():
            try:
                self.handle_exit(cid)
                return
            except errors.Unavailable as err:
                log.info("restart decision for %s waits for a backend: %s", cid, err)
                self._closed.wait(RETRY_S)
            except Exception:
                log.exception("restart decision for %s failed", cid)
                return

    def handle_exit(self, cid: str) -> None:
        """Decide about the container's last exit, once; schedule the restart if any."""
        with self.locked(cid):
            try:
                record = self._graph.get_container(cid)
            except errors.NotFound:
                return
            task = self._task(cid)
            if task is None or is_live(task) or not task.state.HasField("started_at"):
                return
            st = record.restart_state
            if st.handled_started_at == task.state.started_at:
                if st.pending:
                    self._schedule(cid, _seconds(st.restart_at))
                return
            ran = _seconds(task.state.finished_at) - _seconds(task.state.started_at)
            restart, backoff = decide(record, task.state.exit_code, ran, self.daemon_id)
            new = graph_pb2.RestartState()
            new.CopyFrom(st)
            new.backoff_ms = backoff
            new.handled_started_at.CopyFrom(task.state.started_at)
            new.pending = restart
            due = self._clock() + backoff / 1000
            if restart:
                new.restart_count += 1
                new.restart_at.FromNanoseconds(int(due * 1e9))
            else:
                new.ClearField("restart_at")
            self._save(cid, new)
            if restart:
                log.info("container %s exited (%d): restart %d in %d ms", cid, task.state.exit_code,
                         new.restart_count, backoff)
                self._schedule(cid, due)

    # --- restarts ------------------------------------------------------------------------

    def _schedule(self, cid: str, due: float) -> None:
        delay = max(0.0, due - self._clock())
        timer = threading.Timer(delay, self._restart_retrying, args=(cid,))
        timer.daemon = True
        with self._guard:
            old = self._timers.pop(cid, None)
            if old is not None:
                old.cancel()
            if self._closed.is_set():
                return
            self._timers[cid] = timer
        timer.start()

    def _cancel_timer(self, cid: str) -> None:
        with self._guard:
            timer = self._timers.pop(cid, None)
        if timer is not None:
            timer.cancel()

    def _restart_retrying(self, cid: str) -> None:
        with self._guard:
            self._timers.pop(cid, None)
        if self._closed.is_set():
            return
        try:
            self.restart(cid)
        except errors.Unavailable as err:
            log.info("restart of %s waits for a backend: %s", cid, err)
            self._schedule(cid, self._clock() + RETRY_S)
        except Exception:
            log.exception("restart of %s failed", cid)

    def restart(self, cid: str) -> None:
        """Do a pending restart, if it is still wanted (the user may have stopped or removed it)."""
        with self.locked(cid):
            try:
                record = self._graph.get_container(cid)
            except errors.NotFound:
                return
            st = record.restart_state
            if not st.pending:
                return
            task = self._task(cid)
            done = graph_pb2.RestartState()
            done.CopyFrom(st)
            done.pending = False
            if not restarting(record, task) or not policy_of(record):
                self._save(cid, done)  # started by someone else meanwhile, or `update --restart no`
                return
            try:
                self._c._start_record(record)
            except (errors.Unavailable, errors.DeadlineExceeded):
                raise
            except errors.SkiffError as err:
                log.warning("restart of %s failed: %s", cid, err)
            self._save(cid, done)
            self.watch(cid)

    # --- after a gateway (or daemon) start ---------------------------------------------

    def sweep(self, records: list[graph_pb2.Container], tasks: dict[str, exec_pb2.Task]) -> None:
        """Watch running containers with a policy, decide about exits nobody saw, finish pending restarts,
        and bring back ``always`` containers stopped under an earlier daemon."""
        for record in records:
            if not policy_of(record) and not record.restart_state.pending:
                continue
            task = tasks.get(record.id)
            if task is None:
                continue
            if is_live(task):
                self.watch(record.id)
                continue
            st = record.restart_state
            if policy_of(record) == "always" and st.manually_stopped and st.stopped_by_daemon != self.daemon_id:
                with self.locked(record.id):
                    log.info("daemon restarted: starting `always` container %s again", record.id)
                    self.manual_start(record)
                    self._c._start_record(record)
                    self.watch(record.id)
                continue
            self.handle_exit(record.id)

    def close(self) -> None:
        with self._guard:
            timers = list(self._timers.values())
            self._timers.clear()
        for t in timers:
            t.cancel()
