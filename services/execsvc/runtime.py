"""The native exec driver: containers as bundles on disk, each run by a skiff-shim.

Nothing in memory is authoritative. Every answer is computed from the files
in ``<exec_root>/containers/<id>/``, so a new :class:`Runtime` after an
execsvc restart sees exactly what the old one saw:

    config.json        OCI-shaped spec (written by create)
    shim.conf          the shim's few settings (written by create)
    config.marshal     config.json as marshal data, for the init's fast start (written by start)
    init.conf          the C init's config (cinit.py), when the container needs nothing only init.py has
    rootfs/            empty mount point; the overlay exists only in the container's mount ns
    shim.pid init.pid  written by the monitor as soon as the container exists
    start.json         pids, their /proc start times (pid reuse check), started_at
    start-error.json   why the last start failed (kind, message)
    exit.json          exit_code, signal, finished_at, oom_killed (atomic)
    <id>-json.log      the json-file log, unless a log path was given

This process never forks without exec: it runs the shim with subprocess.
"""

from __future__ import annotations

import contextlib
import json
import marshal
import os
import py_compile
import select
import shutil
import signal as signals
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skiff.common import errors, trace
from skiff.common.errors import AlreadyExists, DeadlineExceeded, FailedPrecondition, Internal, NotFound

from . import cinit as cinitmod
from . import devices, logs, notify, nsmodes, userns
from . import slots as slotsmod
from . import spec as specmod
from .cgroups import Cgroups, Resources, detect
from .logs import LogEntry
from .spec import ContainerSpec

INIT_SCRIPT = Path(__file__).with_name("init.py")
#: the bundle's config as marshal data, for the init (see start())
CONFIG_MARSHAL = "config.marshal"
#: How long the shim may take to report a start; the init's set-up is a few dozen syscalls.
START_TIMEOUT = 30.0
#: exit code reported when the monitor vanished without writing exit.json.
LOST_EXIT_CODE = 255


@dataclass(frozen=True)
class State:
    status: str  # "created" | "running" | "exited"
    pid: int = 0
    exit_code: int | None = None
    started_at: str = ""
    finished_at: str = ""
    oom_killed: bool = False
    #: the last start failure, if any
    error: str = ""


def _starttime(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat, or -1 when the process is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return -1
    return int(data[data.rindex(b")") + 2 :].split()[19])


def _alive(pid: int, starttime: int) -> bool:
    return pid > 0 and _starttime(pid) == starttime


def _rfc3339_ns(text: str) -> int:
    """``2024-01-02T03:04:05.123456789Z`` (the monitor's format) as ns since the epoch; 0 if unset."""
    import calendar

    try:
        whole, _, frac = text.rstrip("Z").partition(".")
        secs = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
        return secs * 1_000_000_000 + int((frac + "000000000")[:9])
    except ValueError:
        return 0


def _load(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


class Runtime:
    """Creates, starts, inspects, signals and deletes containers."""

    def __init__(
        self,
        exec_root: Path,
        shim_path: Path,
        python: str = sys.executable,
        cgroups: Cgroups | None = None,
    ):
        self.exec_root = Path(exec_root).absolute()
        self.shim_path = Path(shim_path).absolute()
        #: `--init`'s PID 1, built next to the shim
        self.init_path = self.shim_path.with_name("skiff-init")
        self.python = python
        self.cgroups = cgroups if cgroups is not None else detect()
        #: --userns-remap: containers' root is this range of host ids (None: not remapped)
        self.userns: userns.IdMap | None = None
        (self.exec_root / "containers").mkdir(parents=True, exist_ok=True)
        self._init_stamp: tuple[int, int] | None = None
        #: $SKIFF_INIT=python: every container is set up by init.py (no init.conf for the C init)
        self.force_python_init = os.environ.get("SKIFF_INIT", "") == "python"
        #: called with the id before a task's bundle is deleted (exits.py reports its exit first)
        self.on_delete: Callable[[str], None] | None = None
        #: warm slots (slots.py), when enabled; containers created from one, until their start
        self.slots: slotsmod.SlotPool | None = None
        self._taken: dict[str, tuple[slotsmod.Slot, int]] = {}
        self._taken_lock = threading.Lock()

    def _take_slot(self, spec: ContainerSpec) -> bool:
        """A warm slot's groups renamed to the container's, when the pool has one that fits."""
        if self.slots is None or self.userns is not None:
            return False
        flags = specmod.clone_flags(spec)
        slot = self.slots.take(flags, spec.id)
        if slot is None:
            return False
        with self._taken_lock:
            self._taken[spec.id] = (slot, flags)
        return True

    def _drop_slot(self, cid: str) -> None:
        """The container will not start from its slot (failed, deleted): the monitor sees EOF."""
        with self._taken_lock:
            taken = self._taken.pop(cid, None)
        if taken is not None:
            taken[0].close()
            if self.slots is not None:
                self.slots.refill()

    def _init_code(self) -> str:
        """init.py compiled once into the exec root (python runs a .pyc given as the script),
        so that no container start pays for compiling it; the source if that fails."""
        pyc = self.exec_root / "init.pyc"
        try:
            src = INIT_SCRIPT.stat()
            if self._init_stamp != (src.st_mtime_ns, src.st_size) or not pyc.exists():
                py_compile.compile(str(INIT_SCRIPT), cfile=str(pyc), doraise=True,
                                   invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
                self._init_stamp = (src.st_mtime_ns, src.st_size)
            return str(pyc)
        except (OSError, py_compile.PyCompileError):
            return str(INIT_SCRIPT)

    # ---- paths ----------------------------------------------------------

    def bundle(self, cid: str) -> Path:
        if "/" in cid or cid in ("", ".", ".."):
            raise NotFound(f"no such container: {cid}", reason=errors.CONTAINER_NOT_FOUND)
        return self.exec_root / "containers" / cid

    def _existing(self, cid: str) -> Path:
        b = self.bundle(cid)
        if not (b / "config.json").exists():
            raise NotFound(f"no such container: {cid}", reason=errors.CONTAINER_NOT_FOUND)
        return b

    def config(self, cid: str) -> dict[str, Any]:
        cfg = _load(self._existing(cid) / "config.json")
        assert cfg is not None
        return cfg

    def log_path(self, cid: str) -> Path:
        return Path(self.config(cid)["skiff"]["logPath"])

    # ---- lifecycle ------------------------------------------------------

    def create(self, spec: ContainerSpec) -> None:
        """Writes the bundle and the cgroup. Repeating it before the first start is harmless."""
        spec.validate()
        b = self.bundle(spec.id)
        if (b / "config.json").exists() and self.state(spec.id).status != "created":
            raise AlreadyExists(f"container {spec.id} already exists and was started")
        fresh = not (b / "config.json").exists()
        (b / "rootfs").mkdir(parents=True, exist_ok=True)
        pooled = fresh and not self.cgroups.exists(spec.id) and self._take_slot(spec)
        try:
            procs = self.cgroups.create(spec.id, spec.memory_limit, spec.pids_limit, spec.options.memory_swap,
                                        made=pooled)
        except errors.SkiffError:
            if pooled:  # the slot's groups (and its child) are this container's now: they go
                self._drop_slot(spec.id)
                self.cgroups.remove(spec.id)
            raise
        try:
            self.cgroups.set_resources(spec.id, spec.options.resources)
            cfg = specmod.build_config(spec, b, procs, self.cgroups.path(spec.id))
            cfg = nsmodes.apply(cfg, spec.ns, nsmodes.runtime_donor(self.state), self.cgroups.version)
            cfg = devices.apply_config(cfg, spec.devices, spec.options.privileged)
            cfg = userns.apply(cfg, userns.for_mode(self.userns, spec.ns.userns), spec.options.privileged,
                               spec.network_mode)
            devices.apply(self.cgroups, spec.id, cfg["linux"]["resources"]["devices"])
        except errors.SkiffError:
            self._drop_slot(spec.id)
            if fresh:  # nothing half-made stays behind (a bad --device, a gone IPC donor, ...)
                self.cgroups.remove(spec.id)
                shutil.rmtree(b, ignore_errors=True)
            raise
        if not pooled and not self.force_python_init and cinitmod.unsupported(cfg) is None:
            # After the cgroup directories exist (mkdir would wait for the same grace period).
            cinitmod.prefetch_cgroup_sync(self.cgroups)
        # Run-time state (the exec root): atomic, not fsynced.
        specmod.write_atomic(b / "shim.conf", specmod.shim_conf(spec, b, self.cgroups.oom_file(spec.id), procs),
                             durable=False)
        # Compact: json's C encoder (indent= falls back to the pure-Python one, ~0.5 ms here).
        specmod.write_atomic(b / "config.json", json.dumps(cfg) + "\n", durable=False)

    def start(self, cid: str, created: bool = False) -> int:
        """Runs the container; returns the host pid of its PID 1 once the user's command is exec'd.
        ``created``: :meth:`create` has just made the cgroup and set its limits and devices."""
        b = self._existing(cid)
        st = self.state(cid)
        if st.status == "running":
            raise FailedPrecondition(f"container {cid} is already running", reason=errors.CONTAINER_RUNNING)
        for name in ("exit.json", "start-error.json", "start.json", "init.pid", "shim.pid"):
            (b / name).unlink(missing_ok=True)
        cfg = self.config(cid)
        res = cfg["linux"]["resources"]
        with self._taken_lock:
            taken = self._taken.pop(cid, None)
        if taken is not None:
            # A warm slot's child is in the container's cgroups already: the inits join nothing.
            cfg = {**cfg, "skiff": {**cfg["skiff"], "cgroupProcs": []}}
        with trace.span("cgroups"):
            if not created:
                # Re-created when a restart follows an earlier clean-up; limits are rewritten either way.
                mem = res.get("memory", {})
                self.cgroups.create(cid, mem.get("limit", 0), res.get("pids", {}).get("limit", 0), mem.get("swap", 0))
                self.cgroups.set_resources(cid, Resources.from_oci(res))
                devices.apply(self.cgroups, cid, res.get("devices", []))
        # The init reads this copy (marshal: no json/re imports at its start-up); config.json
        # stays the record. Rewritten at every start, so an update() of config.json is seen.
        (b / CONFIG_MARSHAL).write_bytes(marshal.dumps(cfg))
        # The common case is set up by the shim in C (cinit.c) from init.conf; else init.py runs.
        conf = None if self.force_python_init else cinitmod.conf(cfg)
        if conf is None:
            (b / cinitmod.INIT_CONF).unlink(missing_ok=True)
        else:
            specmod.write_atomic(b / cinitmod.INIT_CONF, conf, durable=False)
        init_argv = [self.python, "-I", "-S", self._init_code(), str(b.resolve())]
        spawned = time.time_ns()
        try:
            if taken is not None:
                try:
                    code, stderr = self._release(cid, b, taken[0], taken[1], init_argv)
                finally:
                    taken[0].close()
            else:
                code, stderr = self._spawn(cid, b, init_argv)
        finally:
            if self.slots is not None:
                self.slots.refill()  # after the start: see SlotPool.refill
        if code != 0:
            err = _load(b / "start-error.json") or {}
            kind = err.get("kind", "other")
            msg = err.get("message") or stderr or f"shim exit {code}"
            if kind == "not-found":
                raise FailedPrecondition(msg, reason=errors.COMMAND_NOT_FOUND)
            if kind == "not-executable":
                raise FailedPrecondition(msg, reason=errors.COMMAND_NOT_EXECUTABLE)
            raise Internal(f"container {cid}: start failed: {msg}")
        started = _load(b / "start.json")
        if started is None:
            raise Internal(f"container {cid}: the shim reported a start but wrote no start.json")
        if trace.current() is not None:
            cloned = _rfc3339_ns(started.get("started_at", ""))
            trace.event("release (warm slot)" if taken is not None else "spawn (shim, clone)", spawned, cloned)
            trace.event("init (set-up, execve)", cloned, time.time_ns(), service="container")
        return int(started["pid"])

    def _spawn(self, cid: str, b: Path, init_argv: list[str]) -> tuple[int, str]:
        """The cold path: ``skiff-shim <bundle> -- <init>``; (exit code, stderr)."""
        cmd = [str(self.shim_path), str(b.resolve()), "--", *init_argv]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, timeout=START_TIMEOUT, cwd="/", stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired as e:
            raise Internal(f"container {cid}: the shim did not report within {START_TIMEOUT}s") from e
        except OSError as e:
            raise Internal(f"cannot run the shim {self.shim_path}: {e.strerror}") from e
        return proc.returncode, proc.stderr.decode(errors="replace").strip()

    def _release(self, cid: str, b: Path, slot: slotsmod.Slot, flags: int,
                 init_argv: list[str]) -> tuple[int, str]:
        """A warm slot's start: the bundle to its standby monitor, its report back (as the cold
        shim's exit code and stderr: 0, 127 not found, 126 not executable, 1)."""
        unshare = flags & slotsmod.RELEASE_FLAGS
        packet = b"g" + b"\0".join(os.fsencode(x) for x in (str(b.resolve()), f"{unshare:x}", *init_argv)) + b"\0"
        try:
            slot.sock.sendall(packet)
            slot.sock.settimeout(START_TIMEOUT)
            report = slot.sock.recv(8192)
        except TimeoutError as e:
            raise Internal(f"container {cid}: the shim did not report within {START_TIMEOUT}s") from e
        except OSError as e:
            report = b"e" + f"the standby shim is gone: {e.strerror}".encode()
        if not report:
            report = b"ethe standby shim exited before reporting the start"
        kind, msg = report[:1], report[1:].decode(errors="replace").strip()
        return {b"0": 0, b"n": 127, b"x": 126}.get(kind, 1), msg

    def trace_exit(self, cid: str, log_path: Path) -> None:
        """Adds the monitor's times of the last run to the current trace: first output, exit."""
        b = self.bundle(cid)
        started = _rfc3339_ns((_load(b / "start.json") or {}).get("started_at", ""))
        finished = _rfc3339_ns((_load(b / "exit.json") or {}).get("finished_at", ""))
        first = 0
        with contextlib.suppress(OSError):
            with open(log_path, "rb") as f:
                entry = logs.parse_line(f.readline())
            if entry is not None:
                first = _rfc3339_ns(entry.time)
        if first >= started > 0:
            trace.event("first output", first, service="container")
        trace.event("run (clone to exit)", started, finished, service="container")

    def state(self, cid: str) -> State:
        b = self._existing(cid)
        started = _load(b / "start.json") or {}
        ex = _load(b / "exit.json")
        if ex is not None:
            return State(
                "exited",
                pid=0,
                exit_code=int(ex["exit_code"]),
                started_at=started.get("started_at", ""),
                finished_at=ex.get("finished_at", ""),
                oom_killed=bool(ex.get("oom_killed")),
            )
        if not started:
            err = _load(b / "start-error.json") or {}
            return State("created", error=err.get("message", ""))
        pid = int(started["pid"])
        # The init alive, or its monitor (which is about to record the exit), means running.
        if _alive(pid, int(started["pid_starttime"])) or _alive(
            int(started["shim_pid"]), int(started["shim_starttime"])
        ):
            # The monitor may be about to write exit.json; a re-read avoids a stale "running".
            if (b / "exit.json").exists():
                return self.state(cid)
            return State("running", pid=pid, started_at=started.get("started_at", ""))
        if (b / "exit.json").exists():
            return self.state(cid)
        # Monitor and container are gone without a record (e.g. the monitor was SIGKILLed).
        return State("exited", exit_code=LOST_EXIT_CODE, started_at=started.get("started_at", ""))

    def kill(self, cid: str, sig: int = signals.SIGTERM) -> None:
        st = self.state(cid)
        if st.status != "running":
            raise FailedPrecondition(f"container {cid} is not running", reason=errors.CONTAINER_NOT_RUNNING)
        try:
            os.kill(st.pid, sig)
        except ProcessLookupError:
            pass  # exited in between: exit.json will say how
        if sig == signals.SIGKILL and self.cgroups.frozen(cid):
            self.cgroups.freeze(cid, False)  # as Docker: a paused container is thawed to die

    def wait(self, cid: str, timeout: float | None = None) -> int:
        """The exit code; works for a container that exited while nobody was watching.

        The monitor writes exit.json and then exits, and it need not be our child: we wait
        for its exit on a pidfd (woken at once), re-checking the files at least every
        200 ms (a monitor from before a restart whose pid we can't open, a lost exit).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            st = self.state(cid)
            if st.status == "exited":
                assert st.exit_code is not None
                return st.exit_code
            if st.status == "created":
                raise FailedPrecondition(
                    f"container {cid} is not running", reason=errors.CONTAINER_NOT_RUNNING
                )
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise DeadlineExceeded(f"container {cid} still running after {timeout}s")
            self._wait_monitor(cid, 0.2 if left is None else min(0.2, left))

    def _wait_monitor(self, cid: str, seconds: float) -> None:
        """Until the container's monitor exits, at most ``seconds``."""
        started = _load(self.bundle(cid) / "start.json") or {}
        pid = int(started.get("shim_pid", 0))
        try:
            fd = os.pidfd_open(pid) if pid > 0 else -1
        except OSError:
            fd = -1
        if fd < 0:
            time.sleep(min(seconds, 0.02))
            return
        try:
            # Opened first, checked second: the pid can't be reused while we hold the fd.
            if not _alive(pid, int(started.get("shim_starttime", -2))):
                return
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            poller.poll(seconds * 1000)
        finally:
            os.close(fd)

    def delete(self, cid: str, force: bool = False) -> None:
        """Removes the cgroup and the bundle; a running container only with ``force`` (killed first)."""
        b = self._existing(cid)
        self._drop_slot(cid)  # created from a slot, never started: its child dies with the cgroup
        if self.state(cid).status == "running":
            if not force:
                raise FailedPrecondition(
                    f"container {cid} is running: stop it first or force", reason=errors.CONTAINER_RUNNING
                )
            with contextlib.suppress(FailedPrecondition):
                self.kill(cid, signals.SIGKILL)
            self.wait(cid, timeout=10)
        if self.on_delete is not None:
            self.on_delete(cid)
        if self.cgroups.exists(cid):
            with trace.span("delete: cgroups"):
                self.cgroups.remove(cid)
        if os.path.ismount(b / "rootfs"):
            # Never rmtree through a mounted root filesystem: it is graphsvc's data.
            raise Internal(f"container {cid}: {b / 'rootfs'} is still a mount point")
        with trace.span("delete: bundle"):
            shutil.rmtree(b)

    def list(self) -> list[str]:
        root = self.exec_root / "containers"
        return sorted(p.name for p in root.iterdir() if (p / "config.json").exists())

    def logs(
        self, cid: str, *, tail: int | None = None, follow: bool = False, stop: Any = None,
        until_ns: int | None = None, attach: bool = False,
    ) -> Iterator[logs.LogEntry]:
        """The log entries (rotated files included); following ends when the container has exited
        and the log is drained. FailedPrecondition when the log driver keeps nothing (but attach).

        A follower wakes when the log's directory changes or the monitor exits (inotify,
        pidfd), not on a timer.
        """
        if not attach and self.config(cid)["skiff"].get("logDriver") == "none":
            raise FailedPrecondition("configured logging driver does not support reading",
                                     reason=errors.LOGS_NOT_AVAILABLE)
        path = self.log_path(cid)
        if not follow:
            return logs.read(path, tail=tail, until_ns=until_ns)
        return self._follow(cid, path, tail, stop, until_ns)

    def _follow(self, cid: str, path: Path, tail: int | None, stop: Any,
                until_ns: int | None) -> Iterator[LogEntry]:
        started = _load(self.bundle(cid) / "start.json") or {}
        waiter = notify.Waiter(path.parent, int(started.get("shim_pid", 0)))
        try:
            yield from logs.read(
                path, tail=tail, follow=True, stop=stop, wait=waiter.wait, until_ns=until_ns,
                is_running=lambda: self.state(cid).status == "running",
            )
        finally:
            waiter.close()
