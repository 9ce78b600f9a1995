"""`skiff cp` on execsvc's side: StatPath, CopyOut, CopyIn, each run by ``cp_helper.py``.

The helper is a separate process (fork+exec through subprocess, as the shim):
for a stopped container it mounts the container's filesystem in a private
mount namespace of its own, which disappears with it. A running container is
reached through its PID 1's root (its mounts included). See cp_helper.py.

A copy into a stopped container mounts its overlay with the container's own
upper and work directories, so it must not overlap a start: both take the
container's lock here (a copy holds it only for its own duration).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from skiff.common import errors, grpcerr
from skiff.exec.v1 import exec_pb2
from skiff.types.v1 import types_pb2

from .mounts import config_entries, from_proto
from .runtime import Runtime, _load

HELPER = Path(__file__).with_name("cp_helper.py")
PATH_NOT_FOUND = errors.PATH_NOT_FOUND
CHUNK = 1 << 20


def _error(stderr: bytes, what: str) -> errors.SkiffError:
    try:
        err = json.loads(stderr.decode(errors="replace").strip().splitlines()[-1])
        kind, message = err["kind"], err["message"]
    except (ValueError, IndexError, KeyError):
        kind, message = "other", f"{what}: {stderr.decode(errors='replace').strip() or 'the helper failed'}"
    if kind == "not-found":
        return errors.NotFound(message, reason=PATH_NOT_FOUND)
    if kind == "invalid":
        return errors.InvalidArgument(message)
    if kind == "readonly":
        return errors.FailedPrecondition(f"{message} (the container's root filesystem or volume is read-only)")
    return errors.Internal(message)


def stat_proto(st: dict[str, Any]) -> types_pb2.PathStat:
    mtime = timestamp_pb2.Timestamp()
    mtime.FromNanoseconds(int(st["mtime_ns"]))
    return types_pb2.PathStat(name=st["name"], size=st["size"], mode=st["mode"], mtime=mtime,
                              link_target=st["link_target"])


class Copier:
    def __init__(self, runtime: Runtime, python: str = sys.executable):
        self.runtime = runtime
        self.python = python
        self.tmp = runtime.exec_root / "cp"
        self.tmp.mkdir(exist_ok=True, mode=0o700)
        for leftover in self.tmp.iterdir():  # mount points of helpers that died with us
            with contextlib.suppress(OSError):
                leftover.rmdir()
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def lock(self, cid: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(cid, threading.Lock())

    @contextlib.contextmanager
    def _request(self, root: exec_pb2.ContainerRoot, path: str, **extra: Any) -> Iterator[dict[str, Any]]:
        """The helper's request; holds the container's lock unless it is running."""
        if not root.id or "\0" in path:
            raise errors.InvalidArgument("a container id and a path without NUL are needed")
        req: dict[str, Any] = {"path": path or "/", **extra}
        started = None
        try:
            if self.runtime.state(root.id).status == "running":
                started = _load(self.runtime.bundle(root.id) / "start.json")
        except errors.NotFound:
            pass  # never started: no task
        if started:
            req |= {"pid": int(started["pid"]), "starttime": int(started["pid_starttime"])}
            yield req
            return
        if root.rootfs.type not in ("overlay", "bind"):
            raise errors.InvalidArgument(f"unsupported root filesystem {root.rootfs.type!r}")
        mounts = from_proto(root.mounts)
        for m in mounts:
            m.validate()
        with self.lock(root.id):
            mnt = Path(tempfile.mkdtemp(prefix=f"{root.id[:12]}-", dir=self.tmp))
            try:
                req |= {"mountpoint": str(mnt), "readonly": root.readonly_rootfs,
                        "rootfs": {"type": root.rootfs.type, "source": root.rootfs.source,
                                   "options": list(root.rootfs.options)},
                        "mounts": config_entries(mounts)}
                yield req
            finally:
                with contextlib.suppress(OSError):
                    mnt.rmdir()

    def _popen(self, mode: str, req: dict[str, Any], stdin: Any = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
        return subprocess.Popen([self.python, "-I", "-S", str(HELPER), mode, json.dumps(req)], stdin=stdin,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/")

    def stat(self, root: exec_pb2.ContainerRoot, path: str) -> types_pb2.PathStat:
        with self._request(root, path) as req:
            proc = self._popen("stat", req)
            out, err = proc.communicate(timeout=60)
        if proc.returncode != 0:
            raise _error(err, "stat")
        return stat_proto(json.loads(out))

    def copy_out(self, root: exec_pb2.ContainerRoot, path: str) -> Iterator[exec_pb2.CopyOutResponse]:
        with self._request(root, path) as req:
            proc = self._popen("out", req)
            try:
                assert proc.stdout is not None and proc.stderr is not None
                first = proc.stdout.readline()
                if not first:
                    proc.wait()
                    raise _error(proc.stderr.read(), "copy")
                yield exec_pb2.CopyOutResponse(stat=stat_proto(json.loads(first)))
                while chunk := proc.stdout.read(CHUNK):
                    yield exec_pb2.CopyOutResponse(chunk=chunk)
                if proc.wait() != 0:
                    raise _error(proc.stderr.read(), "copy")
            finally:
                _reap(proc)

    def copy_in(self, opts: exec_pb2.CopyInOptions, chunks: Iterator[bytes]) -> None:
        extra = {"copy_uid_gid": opts.copy_uid_gid, "no_overwrite_dir_non_dir": opts.no_overwrite_dir_non_dir}
        with self._request(opts.root, opts.path, **extra) as req:
            proc = self._popen("in", req, stdin=subprocess.PIPE)
            try:
                assert proc.stdin is not None and proc.stderr is not None
                try:
                    for chunk in chunks:
                        proc.stdin.write(chunk)
                    proc.stdin.close()
                except BrokenPipeError:
                    pass  # the helper failed early: its error says why
                if proc.wait() != 0:
                    raise _error(proc.stderr.read(), "copy")
            finally:
                _reap(proc)


def _reap(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream:
            with contextlib.suppress(OSError):
                stream.close()


class CopyRPCs:
    """The cp RPCs of ExecService (mixed into the servicer)."""

    copier: Copier

    def StatPath(self, request: exec_pb2.StatPathRequest, context: grpc.ServicerContext
                 ) -> exec_pb2.StatPathResponse:
        with grpcerr.handle(context):
            return exec_pb2.StatPathResponse(stat=self.copier.stat(request.root, request.path))
        raise AssertionError("unreachable")

    def CopyOut(self, request: exec_pb2.CopyOutRequest, context: grpc.ServicerContext
                ) -> Iterator[exec_pb2.CopyOutResponse]:
        with grpcerr.handle(context):
            yield from self.copier.copy_out(request.root, request.path)

    def CopyIn(self, request_iterator: Iterator[exec_pb2.CopyInRequest], context: grpc.ServicerContext
               ) -> exec_pb2.CopyInResponse:
        with grpcerr.handle(context):
            first = next(request_iterator, None)
            if first is None or first.WhichOneof("part") != "options":
                raise errors.InvalidArgument("the first CopyIn message must carry the options")
            self.copier.copy_in(first.options, (r.chunk for r in request_iterator if r.HasField("chunk")))
            return exec_pb2.CopyInResponse()
        raise AssertionError("unreachable")

