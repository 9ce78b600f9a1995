"""Stdin and terminal size for a running task or exec: execsvc's side of the monitor's socket.

The monitor (skiff-shim) of a task started with ``open_stdin`` or ``tty`` listens on
``<bundle>/attach.sock`` (an exec's on ``<bundle>/exec-<id>.sock``); the container's
stdin pipe or terminal master belongs to the monitor, so it outlives this process.
execsvc only translates AttachStdin requests into the monitor's frames, one connection
per stream (the message flow is drawn in shim.c and docs/architecture.md):

    'd' <len> bytes      stdin data, at most 4096 bytes a frame
    'e' 0                close stdin (the stream ended normally and close_on_eof is set)
    'w' 4 rows cols      TIOCSWINSZ (two big-endian uint16)

A frame header is one type byte and a big-endian uint32 length. The socket is reached
through ``/proc/self/fd/<dirfd>/`` because a bundle path may be longer than a socket
address (108 bytes).
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc

from skiff.common import errors, grpcerr
from skiff.exec.v1 import exec_pb2
from skiff.types.v1 import types_pb2

from .runtime import Runtime

FRAME_MAX = 4096
_HEADER = struct.Struct(">cI")


def frames(req: exec_pb2.AttachStdinRequest) -> bytes:
    """One request as the monitor's frames."""
    part = req.WhichOneof("part")
    if part == "data":
        data = req.data
        return b"".join(_HEADER.pack(b"d", len(data[i:i + FRAME_MAX])) + data[i:i + FRAME_MAX]
                        for i in range(0, len(data), FRAME_MAX))
    if part == "resize":
        return resize_frame(req.resize)
    return b""


def resize_frame(size: types_pb2.TerminalSize) -> bytes:
    rows, cols = min(size.rows, 0xFFFF), min(size.cols, 0xFFFF)
    return _HEADER.pack(b"w", 4) + struct.pack(">HH", rows, cols)


EOF_FRAME = _HEADER.pack(b"e", 0)


def connect(bundle: Path, name: str) -> socket.socket:
    """A connection to the monitor's socket ``bundle/name``; OSError when nobody listens."""
    dfd = os.open(bundle, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(f"/proc/self/fd/{dfd}/{name}")
        except OSError:
            sock.close()
            raise
        return sock
    finally:
        os.close(dfd)


def open_target(runtime: Runtime, target: exec_pb2.StdinTarget) -> socket.socket:
    cid, eid = target.task_id, target.exec_id
    bundle = runtime.bundle(cid)
    if runtime.state(cid).status != "running":
        raise errors.FailedPrecondition(f"Container {cid} is not running", reason=errors.CONTAINER_NOT_RUNNING)
    if eid:
        from .exec import _EXEC_ID

        if not _EXEC_ID.match(eid) or not (bundle / f"exec-{eid}.json").exists():
            raise errors.NotFound(f"no such exec: {eid}", reason=errors.CONTAINER_NOT_FOUND)
    try:
        return connect(bundle, f"exec-{eid}.sock" if eid else "attach.sock")
    except OSError as e:
        what = f"exec {eid}" if eid else f"container {cid}"
        raise errors.FailedPrecondition(f"{what} is not running (its monitor does not answer: {e.strerror})",
                                        reason=errors.CONTAINER_NOT_RUNNING) from e


def feed(sock: socket.socket, requests: Iterator[exec_pb2.AttachStdinRequest], close_on_eof: bool) -> None:
    """Sends every request in order; EOF last when the requests ended normally and it is wanted.

    A write error means the monitor is gone (the process exited): nothing more to do.
    """
    try:
        for req in requests:
            sock.sendall(frames(req))
        if close_on_eof:
            sock.sendall(EOF_FRAME)
    except (BrokenPipeError, ConnectionResetError):
        return


class StdinRPCs:
    """AttachStdin, mixed into execsvc's servicer (which provides ``runtime``)."""

    runtime: Runtime

    def AttachStdin(self, request_iterator: Iterator[exec_pb2.AttachStdinRequest],
                    context: grpc.ServicerContext) -> exec_pb2.AttachStdinResponse:
        with grpcerr.handle(context):
            first = next(request_iterator, None)
            if first is None or first.WhichOneof("part") != "target":
                raise errors.InvalidArgument("the first AttachStdin request must name the target")
            sock = open_target(self.runtime, first.target)
            done = threading.Event()

            def cancelled() -> None:
                # A cancelled stream (a detach, or the caller died) must not unblock into EOF:
                # shutting the socket down fails the pending send instead.
                if not done.is_set():
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

            context.add_callback(cancelled)
            try:
                feed(sock, _until_cancelled(request_iterator, context), first.target.close_on_eof)
            except (OSError, grpc.RpcError):
                pass  # cancelled: shut down by cancelled(), or the request iterator raised
            finally:
                done.set()
                sock.close()
            return exec_pb2.AttachStdinResponse()
        raise AssertionError("unreachable")


def _until_cancelled(requests: Iterator[exec_pb2.AttachStdinRequest], context: grpc.ServicerContext
                     ) -> Iterator[exec_pb2.AttachStdinRequest]:
    """The requests; raises (instead of ending, which would mean EOF) when the call was cancelled."""
    yield from requests
    if not context.is_active():
        raise OSError("cancelled")
