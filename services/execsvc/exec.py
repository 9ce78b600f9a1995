"""`skiff exec`: more processes in a running task, each with a monitor of its own.

execsvc never forks here either: :meth:`Execs.start` writes ``exec-<id>.json``
into the task's bundle and runs ``skiff-shim exec <bundle> <id> -- python
exec_init.py <bundle> <id>``, which returns once the command runs (or failed to).
The shim's monitor then holds the process's output, writes it to
``exec-<id>-json.log`` (json-file, as the container's log) and records
``exec-<id>.exit.json``; :meth:`Execs.output` follows that log and waits for that
file, exactly as for a container. The files live in the bundle, so they go with it.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from skiff.common import errors, grpcerr
from skiff.exec.v1 import exec_pb2
from skiff.types.v1 import types_pb2

from . import logs
from . import spec as specmod
from .runtime import LOST_EXIT_CODE, START_TIMEOUT, Runtime, _alive, _load

EXEC_INIT = Path(__file__).with_name("exec_init.py")
_EXEC_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_STREAM = {"stdout": types_pb2.LOG_STREAM_STDOUT, "stderr": types_pb2.LOG_STREAM_STDERR}


def merge_env(base: list[str], extra: list[str]) -> list[str]:
    """The container's environment with ``extra`` added; a key given again is replaced (Docker's rule)."""
    out: dict[str, str] = {}
    for e in [*base, *extra]:
        key, _, _ = e.partition("=")
        out[key] = e
    return list(out.values())


def exec_config(cfg: dict[str, Any], spec: exec_pb2.ExecSpec) -> dict[str, Any]:
    """What exec_init.py needs: the task's process settings overridden by the exec's."""
    if not spec.args:
        raise errors.InvalidArgument("no command given", reason=errors.NO_COMMAND)
    for e in spec.env:
        if "=" not in e or e.startswith("="):
            raise errors.InvalidArgument(f"invalid environment variable {e!r}")
    proc = cfg["process"]
    env = merge_env(list(proc.get("env", [])), list(spec.env))
    if spec.tty and not any(e.startswith("TERM=") for e in env):
        env.append("TERM=xterm")  # as Docker's exec -t
    return {
        "args": list(spec.args),
        "env": env,
        "cwd": spec.working_dir or proc.get("cwd") or "/",
        "user": specmod._user(spec.user) if spec.user else proc.get("user", {}),
        "terminal": spec.tty,
        "consoleSize": {"height": min(spec.console_size.rows, 0xFFFF), "width": min(spec.console_size.cols, 0xFFFF)},
        **({"capabilities": _all_caps()} if spec.privileged else {}),
    }


def _all_caps() -> dict[str, list[str]]:
    """``exec --privileged``: every capability (Docker's), nothing inheritable or ambient."""
    from skiff.execsvc.options import all_capabilities

    caps = all_capabilities()
    return {"bounding": caps, "effective": caps, "permitted": caps, "inheritable": [], "ambient": []}


class Execs:
    """Exec processes of the runtime's tasks; state on disk, in the task's bundle."""

    def __init__(self, runtime: Runtime, python: str | None = None):
        self.runtime = runtime
        self.python = python or runtime.python

    def _path(self, task_id: str, exec_id: str, suffix: str) -> Path:
        if not _EXEC_ID.match(exec_id):
            raise errors.InvalidArgument(f"invalid exec id {exec_id!r}")
        return self.runtime.bundle(task_id) / f"exec-{exec_id}{suffix}"

    def start(self, spec: exec_pb2.ExecSpec) -> None:
        cid, eid = spec.task_id, spec.exec_id
        config = self._path(cid, eid, ".json")
        if self.runtime.state(cid).status != "running":
            raise errors.FailedPrecondition(f"Container {cid} is not running",
                                            reason=errors.CONTAINER_NOT_RUNNING)
        if config.exists():
            raise errors.AlreadyExists(f"exec {eid} already exists in container {cid}")
        specmod.write_json_atomic(config, exec_config(self.runtime.config(cid), spec))
        if spec.tty or spec.stdin:  # the monitor's interactive I/O (its socket is exec-<id>.sock)
            specmod.write_atomic(self._path(cid, eid, ".io"),
                                 "".join(f"{line}\n" for line in specmod.io_conf(spec.tty, spec.stdin)))
        bundle = str(self.runtime.bundle(cid).resolve())
        cmd = [str(self.runtime.shim_path), "exec", bundle, eid, "--",
               self.python, "-I", "-S", str(EXEC_INIT), bundle, eid]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=START_TIMEOUT, cwd="/",
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise errors.Internal(f"exec {eid}: the shim did not report within {START_TIMEOUT}s") from e
        except OSError as e:
            raise errors.Internal(f"cannot run the shim {self.runtime.shim_path}: {e.strerror}") from e
        if proc.returncode == 0:
            return
        msg = proc.stderr.decode(errors="replace").strip() or f"shim exit {proc.returncode}"
        self._forget(cid, eid)
        if proc.returncode == 127:
            raise errors.FailedPrecondition(msg, reason=errors.COMMAND_NOT_FOUND)
        if proc.returncode == 126:
            raise errors.FailedPrecondition(msg, reason=errors.COMMAND_NOT_EXECUTABLE)
        raise errors.Internal(f"exec {eid} in container {cid}: {msg}")

    def _forget(self, cid: str, eid: str) -> None:
        for suffix in (".json", ".start.json", ".exit.json", "-json.log", ".io", ".sock"):
            self._path(cid, eid, suffix).unlink(missing_ok=True)

    def _check(self, cid: str, eid: str) -> None:
        if not self._path(cid, eid, ".json").exists():
            raise errors.NotFound(f"no such exec: {eid}", reason=errors.CONTAINER_NOT_FOUND)

    def exit_code(self, cid: str, eid: str) -> int | None:
        """The exit code once the process has exited and its monitor recorded it; None while it runs."""
        ex = _load(self._path(cid, eid, ".exit.json"))
        if ex is not None:
            return int(ex["exit_code"])
        started = _load(self._path(cid, eid, ".start.json"))
        if started is not None and _alive(int(started["shim_pid"]), int(started["shim_starttime"])):
            return None
        ex = _load(self._path(cid, eid, ".exit.json"))  # written just before the monitor exited
        return LOST_EXIT_CODE if ex is None else int(ex["exit_code"])

    def output(self, cid: str, eid: str, stop: threading.Event | None = None) -> Iterator[logs.LogEntry]:
        self._check(cid, eid)
        return logs.read(self._path(cid, eid, "-json.log"), follow=True, stop=stop,
                         is_running=lambda: self.exit_code(cid, eid) is None)

    def wait(self, cid: str, eid: str, stop: threading.Event | None = None) -> int:
        self._check(cid, eid)
        delay = 0.02
        while (code := self.exit_code(cid, eid)) is None:
            if stop is not None and stop.is_set():
                raise errors.DeadlineExceeded("the call was cancelled", reason="CANCELLED")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.2)
        return code


class ExecRPCs:
    """StartExec and AttachExec, mixed into execsvc's servicer (which provides ``runtime``)."""

    runtime: Runtime

    @property
    def execs(self) -> Execs:
        return Execs(self.runtime)

    def StartExec(self, request: exec_pb2.StartExecRequest,
                  context: grpc.ServicerContext) -> exec_pb2.StartExecResponse:
        with grpcerr.handle(context):
            self.execs.start(request.spec)
            return exec_pb2.StartExecResponse()

    def AttachExec(self, request: exec_pb2.AttachExecRequest,
                   context: grpc.ServicerContext) -> Iterator[exec_pb2.AttachExecResponse]:
        with grpcerr.handle(context):
            stop = threading.Event()
            context.add_callback(stop.set)
            execs = self.execs
            for entry in execs.output(request.task_id, request.exec_id, stop):
                ts = types_pb2.LogEntry(stream=_STREAM.get(entry.stream, types_pb2.LOG_STREAM_UNSPECIFIED),
                                        data=entry.data)
                ts.time.FromJsonString(entry.time)
                yield exec_pb2.AttachExecResponse(output=ts)
            if stop.is_set():
                return
            yield exec_pb2.AttachExecResponse(exit_code=execs.wait(request.task_id, request.exec_id, stop))
