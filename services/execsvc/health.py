"""Health checks (`--health-*`, the image's HEALTHCHECK): probes run as execs, state on disk.

One thread per running task with a health check runs the probe every interval
through the exec machinery (``Execs``: a ``skiff-shim exec`` monitor, joining
the task's namespaces, cgroup and security), waits at most the timeout (then
kills the probe: exit -1, as Docker), and records the result in
``<bundle>/health.json`` (atomic). The file names the run it belongs to (the
task's ``started_at``), so a restarted task starts again as ``starting``, and a
new execsvc picks the checks up where the old one stopped.

Docker's rules: the first probe one interval after the start; exit 0 is
healthy (the failing streak resets), anything else a failure; failures during
the start period do not count while the status is still ``starting``;
``retries`` consecutive failures make it ``unhealthy``; the last 5 results are
kept, each output at most 4096 bytes; a stopped container reads as unhealthy.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from skiff.common import errors
from skiff.exec.v1 import exec_pb2
from skiff.types.v1 import types_pb2

from . import logs
from . import spec as specmod
from .exec import Execs
from .runtime import Runtime, _load

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_NS = 30_000_000_000
DEFAULT_TIMEOUT_NS = 30_000_000_000
DEFAULT_RETRIES = 3
MAX_LOG_ENTRIES = 5
MAX_OUTPUT = 4096
STATE_FILE = "health.json"
_STATUS = {"starting": types_pb2.HEALTH_STATUS_STARTING, "healthy": types_pb2.HEALTH_STATUS_HEALTHY,
           "unhealthy": types_pb2.HEALTH_STATUS_UNHEALTHY}


def config_from_proto(hc: types_pb2.Healthcheck) -> dict[str, Any] | None:
    """The bundle's ``skiff.healthcheck`` (defaults applied), or None for no check."""
    test = list(hc.test)
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD-SHELL" and len(test) == 2:
        args = ["/bin/sh", "-c", test[1]]
    elif test[0] == "CMD" and len(test) > 1:
        args = test[1:]
    else:
        raise errors.InvalidArgument(f"invalid health check test {test!r}: want NONE, CMD args..., CMD-SHELL cmd")
    for name in ("interval_ns", "timeout_ns", "start_period_ns"):
        value = getattr(hc, name)
        if value < 0 or 0 < value < 1_000_000:
            raise errors.InvalidArgument(f"health check {name.removesuffix('_ns')} must be at least 1ms")
    if hc.retries < 0:
        raise errors.InvalidArgument("health check retries must not be negative")
    return {"args": args, "interval": hc.interval_ns or DEFAULT_INTERVAL_NS,
            "timeout": hc.timeout_ns or DEFAULT_TIMEOUT_NS, "startPeriod": hc.start_period_ns,
            "retries": hc.retries or DEFAULT_RETRIES}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() if rfc3339 else 0.0


def apply_result(state: dict[str, Any], result: dict[str, Any], check: dict[str, Any], started: float) -> None:
    """Docker's handleProbeResult on ``state`` (status, failingStreak, log)."""
    state["log"] = [*state.get("log", []), result][-MAX_LOG_ENTRIES:]
    if result["exitCode"] == 0:
        state["failingStreak"] = 0
        state["status"] = "healthy"
        return
    if state.get("status", "starting") == "starting" and _epoch(result["start"]) - started < check["startPeriod"] / 1e9:
        return  # still starting up: the failure does not count
    state["failingStreak"] = state.get("failingStreak", 0) + 1
    if state["failingStreak"] >= check["retries"]:
        state["status"] = "unhealthy"


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


class Monitors:
    """The health-check threads of one execsvc."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.execs = Execs(runtime)
        self._lock = threading.Lock()
        #: (task, run): a restarted task gets a checker of its own while the old one winds down
        self._running: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        #: per task: held by a checker around a probe and its files, and by quiesce()
        self._task_locks: dict[str, threading.Lock] = {}
        self._quiet: set[str] = set()

    def _task_lock(self, cid: str) -> threading.Lock:
        with self._lock:
            return self._task_locks.setdefault(cid, threading.Lock())

    @contextmanager
    def quiesce(self, cid: str) -> Iterator[None]:
        """No probe runs, nor any probe file is touched, while the bundle is deleted or rewritten
        (a probe in progress is cut short and cleaned up first)."""
        with self._lock:
            self._quiet.add(cid)
        try:
            with self._task_lock(cid):
                yield
        finally:
            with self._lock:
                self._quiet.discard(cid)

    def check_of(self, cid: str) -> dict[str, Any] | None:
        check: dict[str, Any] | None = self.runtime.config(cid).get("skiff", {}).get("healthcheck")
        return check

    def health(self, cid: str, status: str, started_at: str) -> types_pb2.Health | None:
        """The task's health for its state; None without a check (no state file: ``ensure`` writes
        one at every start of a task that has a check, so config.json need not be read here)."""
        try:
            state = _load(self.runtime.bundle(cid) / STATE_FILE)
        except errors.NotFound:
            return None
        if state is None:
            return None
        if state.get("run") != started_at:
            state = {}
        word = state.get("status", "starting") if status == "running" else "unhealthy"
        out = types_pb2.Health(status=_STATUS[word], failing_streak=int(state.get("failingStreak", 0)))
        for r in state.get("log", []):
            item = types_pb2.HealthResult(exit_code=int(r["exitCode"]), output=r.get("output", ""))
            item.start.FromJsonString(r["start"])
            item.end.FromJsonString(r["end"])
            out.log.append(item)
        return out

    def ensure(self, cid: str) -> None:
        """Start the task's checker if it runs and has a check (idempotent)."""
        try:
            st = self.runtime.state(cid)
            if st.status != "running" or not self.check_of(cid):
                return
        except errors.NotFound:
            return
        path = self.runtime.bundle(cid) / STATE_FILE
        if (_load(path) or {}).get("run") != st.started_at:
            specmod.write_json_atomic(path, {"run": st.started_at, "status": "starting", "failingStreak": 0,
                                             "log": []})
        with self._lock:
            if (cid, st.started_at) in self._running or self._stop.is_set():
                return
            self._running.add((cid, st.started_at))
        threading.Thread(target=self._loop, args=(cid, st.started_at), name=f"health-{cid[:12]}",
                         daemon=True).start()

    def resume_all(self) -> None:
        """After an execsvc start: the checks of the tasks that are still running."""
        for cid in self.runtime.list():
            try:
                self.ensure(cid)
            except Exception:
                log.exception("resuming the health check of %s", cid)

    def close(self) -> None:
        self._stop.set()

    def _loop(self, cid: str, run: str) -> None:
        try:
            started = _epoch(run)
            check = self.check_of(cid)
            assert check is not None
            while True:
                st = self.runtime.state(cid)
                if st.status != "running" or st.started_at != run:
                    return  # exited, or started again (that run has a checker of its own)
                state = _load(self.runtime.bundle(cid) / STATE_FILE) or {}
                if state.get("run") != run:
                    state = {"run": run, "status": "starting", "failingStreak": 0, "log": []}
                    with self._task_lock(cid):
                        if cid in self._quiet:
                            return
                        specmod.write_json_atomic(self.runtime.bundle(cid) / STATE_FILE, state)
                last = _epoch(state["log"][-1]["end"]) if state["log"] else started
                wait = max(0.0, last + check["interval"] / 1e9 - time.time())
                if self._stop.wait(wait):
                    return
                st = self.runtime.state(cid)
                if st.status != "running" or st.started_at != run:
                    return
                if self.runtime.cgroups.exists(cid) and self.runtime.cgroups.frozen(cid):
                    continue  # paused: no probe (it could not run)
                with self._task_lock(cid):
                    if cid in self._quiet:
                        return
                    result = self.probe(cid, check)
                    st = self.runtime.state(cid)
                    if st.status != "running" or st.started_at != run or cid in self._quiet:
                        return  # it stopped meanwhile: the probe says nothing about its health
                    apply_result(state, result, check, started)
                    specmod.write_json_atomic(self.runtime.bundle(cid) / STATE_FILE, state)
        except errors.NotFound:
            return  # deleted
        except Exception:
            log.exception("health check of %s failed", cid)
        finally:
            with self._lock:
                self._running.discard((cid, run))

    def probe(self, cid: str, check: dict[str, Any]) -> dict[str, Any]:
        """Runs the probe once; its result as Docker logs it."""
        eid = f"health-{time.time_ns()}"
        start = _now()
        spec = exec_pb2.ExecSpec(task_id=cid, exec_id=eid, args=check["args"])
        try:
            self.execs.start(spec)
        except errors.SkiffError as err:
            return {"start": start, "end": _now(), "exitCode": -1, "output": str(err)[:MAX_OUTPUT]}
        try:
            deadline = time.monotonic() + check["timeout"] / 1e9
            code = self.execs.exit_code(cid, eid)
            while code is None and time.monotonic() < deadline and not self._stop.is_set() and cid not in self._quiet:
                time.sleep(0.05)
                code = self.execs.exit_code(cid, eid)
            if code is None:
                self._kill(cid, eid)
                return {"start": start, "end": _now(), "exitCode": -1,
                        "output": f"Health check exceeded timeout ({check['timeout'] / 1e9:g}s)"}
            output = b"".join(e.data for e in logs.read(self.execs._path(cid, eid, "-json.log")))
            return {"start": start, "end": _now(), "exitCode": code,
                    "output": output[:MAX_OUTPUT].decode(errors="replace")}
        finally:
            self._forget_later(cid, eid)

    def _kill(self, cid: str, eid: str) -> None:
        started = _load(self.execs._path(cid, eid, ".start.json"))
        if started is None:
            return
        for pid in _children(int(started["shim_pid"])):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _forget_later(self, cid: str, eid: str) -> None:
        """Remove the probe's files once its monitor has recorded the exit (bounded wait)."""
        for _ in range(100):
            if self.execs.exit_code(cid, eid) is not None:
                break
            time.sleep(0.05)
        try:
            self.execs._forget(cid, eid)
        except errors.SkiffError:
            pass
