"""skiffd's zygote: the services forked from one process that imported their code once.

Four Python services that each import grpc, protobuf, the generated protos and skiff's
modules hold four private copies of the same ~20-30 MB of heap. The zygote imports all
of it once, ``gc.freeze()``s it (the collector then never writes to those objects) and
forks each service from there, so the pages stay shared copy-on-write between skiffd,
the zygote and the four services.

The zygote is forked by skiffd at start, before skiffd creates any grpc channel or
thread (gRPC's rule: no fork once grpc is initialised), and never runs a channel,
server or thread itself, so every fork from it is clean: a crashed service is forked
again from the same state. skiffd asks for a service over a socketpair; the zygote
forks a short-lived intermediate which forks the service and exits, so the service is
re-parented to skiffd (its subreaper), which reaps and restarts it as any child. The
service then behaves exactly as ``python -m skiff.<name> …``: own process group,
SIGTERM when skiffd dies, that command line in ``ps``.

``SKIFF_ZYGOTE=0`` turns it off (each service exec'd, as under systemd).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import logging
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable

from skiff.supervisor import proctitle

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
#: Services the zygote can run: ``python -m skiff.<name>``.
SERVICES = ("graphsvc", "execsvc", "netsvc", "apiserver")
#: What the services import when they start (and the pull's and network's lazy imports),
#: imported once in the zygote. A module missing here is imported by the service itself.
PRELOAD = (
    "grpc", "grpc_health.v1.health", "grpc_reflection.v1alpha.reflection", "grpc_status.rpc_status",
    "google.protobuf.json_format",
    "skiff.common.server",
    "skiff.graph.v1.graph_pb2_grpc", "skiff.exec.v1.exec_pb2_grpc", "skiff.net.v1.net_pb2_grpc",
    "skiff.api.v1.api_pb2_grpc",
    "skiff.graphsvc.servicer", "skiff.graphsvc.graph", "skiff.graphsvc.pull",
    "skiff.graphsvc.registry", "skiff.graphsvc.reference",
    "skiff.execsvc.servicer", "skiff.execsvc.runtime", "skiff.execsvc.cgroups",
    "skiff.netsvc.server",
    "skiff.apiserver.server",
)
_MSG = 1 << 16


def service_of(argv: list[str]) -> str | None:
    """``graphsvc`` for ``[python, "-m", "skiff.graphsvc", …]``; None for anything else."""
    if len(argv) >= 3 and argv[1] == "-m" and argv[2].startswith("skiff."):
        name = argv[2].removeprefix("skiff.")
        if name in SERVICES and os.path.realpath(argv[0]) == os.path.realpath(sys.executable):
            return name
    return None


def enabled() -> bool:
    return os.environ.get("SKIFF_ZYGOTE", "1").strip().lower() not in ("0", "false", "no", "off")


class Zygote:
    """skiffd's handle on the zygote process."""

    def __init__(self, pid: int, sock: socket.socket, fallback: Callable[[list[str]], int]):
        self.pid: int | None = pid
        self._sock = sock
        self._fallback = fallback

    @classmethod
    def start(cls, fallback: Callable[[list[str]], int]) -> Zygote:
        """Fork the zygote. Call while skiffd has no thread and has not used grpc."""
        preload()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        skiffd = os.getpid()
        pid = os.fork()
        if pid == 0:  # the zygote; never returns
            code = 1
            try:
                parent.close()
                code = _zygote_main(child, skiffd)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        child.close()
        return cls(pid, parent, fallback)

    def spawn(self, argv: list[str]) -> int:
        """Start a service; return its pid (skiffd's child). Not a service of ours: exec'd as before."""
        if self.pid is None or service_of(argv) is None:
            return self._fallback(argv)
        try:
            self._sock.settimeout(60)  # the first request waits for the zygote's imports
            self._sock.send(json.dumps(argv).encode())
            reply = self._sock.recv(_MSG).decode()
            if not reply:
                raise ConnectionError("the zygote is gone")
            if not reply.isdigit():
                raise OSError(reply)
            return int(reply)
        except (OSError, ValueError) as err:
            log.warning("zygote: %s; starting services without it from now on", err)
            self.close()
            return self._fallback(argv)

    def close(self) -> None:
        """Let the zygote go (it exits when its socket closes) and reap it."""
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        self._sock.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    return
            except ChildProcessError:
                return  # already reaped by skiffd's loop
            time.sleep(0.01)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def preload() -> None:
    """Import what the services will, in skiffd itself: the pages are then shared by all six."""
    from skiff.common import memory

    memory.limit_arenas()  # before any thread: inherited by every service forked from here
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as err:  # the service will import it itself, and say what is wrong
            log.debug("zygote: preloading %s: %s", name, err)
    gc.collect()
    gc.freeze()  # from here on the collector leaves the preloaded objects (and their pages) alone


def _prctl(option: int, arg: int) -> None:
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(option, arg, 0, 0, 0)


def _zygote_main(sock: socket.socket, skiffd: int) -> int:
    os.setpgid(0, 0)  # a terminal's Ctrl-C goes to skiffd alone, as for the services
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != skiffd:
        return 0
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    keep = {0, 1, 2, sock.fileno()}
    for fd in [int(n) for n in os.listdir("/proc/self/fd")]:
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)  # skiffd's (the pidfile's lock): not the services' business
    proctitle.set_name("skiff-zygote")
    while True:
        msg = sock.recv(_MSG)
        if not msg:
            return 0
        argv = json.loads(msg.decode())
        rfd, wfd = os.pipe()
        try:
            middle = os.fork()
        except OSError as err:
            os.close(rfd)
            os.close(wfd)
            sock.send(f"fork: {err}".encode())
            continue
        if middle == 0:
            code = 1
            try:
                os.close(rfd)
                sock.close()
                code = _middle(wfd, skiffd, argv)
            finally:
                os._exit(code)
        os.close(wfd)
        os.waitpid(middle, 0)  # once it is gone, the service is skiffd's child
        with os.fdopen(rfd, "rb") as f:
            reply = f.read() or b"the intermediate process died"
        sock.send(reply)


def _middle(wfd: int, skiffd: int, argv: list[str]) -> int:
    """Fork the service, tell the zygote its pid, exit: the service re-parents to skiffd."""
    try:
        pid = os.fork()
    except OSError as err:
        os.write(wfd, f"fork: {err}".encode())
        return 1
    if pid == 0:
        code = 1
        try:
            os.close(wfd)
            code = _service(skiffd, argv)
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
    os.write(wfd, str(pid).encode())
    return 0


def _service(skiffd: int, argv: list[str]) -> int:
    """Become ``python -m skiff.<name> argv[3:]`` and run it to its end; the exit code."""
    import runpy
    import threading

    os.setpgid(0, 0)
    deadline = time.monotonic() + 10
    while os.getppid() != skiffd:  # the intermediate is exiting
        if time.monotonic() > deadline:
            return 1
        time.sleep(0.001)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # as `setpriv --pdeathsig TERM` did
    if os.getppid() != skiffd:
        return 1  # skiffd died in between
    signal.signal(signal.SIGINT, signal.default_int_handler)
    module = argv[2]
    logging.root.handlers.clear()  # skiffd's; the service's setup_logging sets its own
    proctitle.set_name(f"skiff-{module.removeprefix('skiff.')}")
    proctitle.set_cmdline(argv)
    sys.argv = ["-m", *argv[3:]]
    code: int = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    # What the interpreter does on its way out: wait for non-daemon threads, run atexit.
    with contextlib.suppress(Exception):
        threading._shutdown()  # type: ignore[attr-defined]
    with contextlib.suppress(Exception):
        import atexit

        atexit._run_exitfuncs()
    return code
