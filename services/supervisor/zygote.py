"""skiffd as a zygote: the services forked from one process that imported their code once.

Four Python services that each import grpc, protobuf, the generated protos and skiff's
modules hold four private copies of the same ~20 MB of heap. skiffd imports all of it
once at start (``preload``), ``gc.freeze()``s it (the collector then never writes to
those objects) and forks each service from itself, so the pages stay shared
copy-on-write between skiffd and the four services.

gRPC's rule is no fork once grpc runs in the process: skiffd imports grpc but never
makes a channel, server or thread (its health probes speak HTTP/2 on the unix socket
by hand, health.py), so every fork from it is clean, and a crashed service is forked
again from the same state. Should skiffd ever not be clean (a tcp-only gateway probed
over TLS with grpcio, or a thread), services are exec'd as before. The forked service
behaves as ``python -m skiff.<name> …`` does: own process group, SIGTERM when skiffd
dies, none of skiffd's descriptors or signal handlers, that command line in ``ps``.

``SKIFF_ZYGOTE=0`` turns it off (each service exec'd, as under systemd).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import signal
import sys
import threading
import traceback
import weakref
from collections.abc import Callable

from skiff.supervisor import proctitle

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
#: Services the zygote can run: ``python -m skiff.<name>``.
SERVICES = ("graphsvc", "execsvc", "netsvc", "apiserver")
#: What the services import when they start (and the pull's and network's lazy imports),
#: imported once in the zygote. A module missing here is imported by the service itself.
PRELOAD = (
    "grpc", "grpc._server", "grpc._channel", "grpc._interceptor", "runpy", "_strptime",
    "grpc_health.v1.health", "grpc_reflection.v1alpha.reflection", "grpc_status.rpc_status",
    "google.protobuf.json_format",
    "skiff.common.server",
    "skiff.graph.v1.graph_pb2_grpc", "skiff.exec.v1.exec_pb2_grpc", "skiff.net.v1.net_pb2_grpc",
    "skiff.api.v1.api_pb2_grpc",
    "skiff.graphsvc.servicer", "skiff.graphsvc.graph", "skiff.graphsvc.pull",
    "skiff.graphsvc.registry", "skiff.graphsvc.reference", "skiff.graphsvc.containerfilter",
    "skiff.execsvc.servicer", "skiff.execsvc.runtime", "skiff.execsvc.cgroups",
    "skiff.netsvc.server",
    "skiff.apiserver.server",
)


def service_of(argv: list[str]) -> str | None:
    """``graphsvc`` for ``[python, "-m", "skiff.graphsvc", …]``; None for anything else."""
    if len(argv) >= 3 and argv[1] == "-m" and argv[2].startswith("skiff."):
        name = argv[2].removeprefix("skiff.")
        if name in SERVICES and os.path.realpath(argv[0]) == os.path.realpath(sys.executable):
            return name
    return None


def enabled() -> bool:
    return os.environ.get("SKIFF_ZYGOTE", "1").strip().lower() not in ("0", "false", "no", "off")


class Forker:
    """skiffd's spawn function: fork a service from skiffd itself while skiffd is clean.

    Clean: one thread, and no grpc channel ever made here (health.py probes unix
    sockets without grpcio). Anything else, or a command that is not one of our
    services, is exec'd as before (``fallback``, posix_spawn).
    """

    def __init__(self, fallback: Callable[[list[str]], int]):
        self._fallback = fallback
        self._pid = os.getpid()

    def clean(self) -> bool:
        from skiff.supervisor import health

        return not health.used_grpc and threading.active_count() == 1 and os.getpid() == self._pid

    def spawn(self, argv: list[str]) -> int:
        """Start a service; return its pid."""
        if service_of(argv) is None or not self.clean():
            return self._fallback(argv)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the service; never returns
            code = 1
            try:
                code = _service(parent, argv)
            except BaseException:
                traceback.print_exc()
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        return pid


def preload() -> None:
    """Import what the services will, in skiffd itself: the pages are then shared by all five."""
    from skiff.common import memory

    memory.limit_arenas()  # before any thread: inherited by every service forked from here
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as err:  # the service will import it itself, and say what is wrong
            log.debug("preloading %s: %s", name, err)
    gc.collect()
    gc.freeze()  # from here on the collector leaves the preloaded objects (and their pages) alone


def _prctl(option: int, arg: int) -> None:
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(option, arg, 0, 0, 0)


def _service(skiffd: int, argv: list[str]) -> int:
    """Become ``python -m skiff.<name> argv[3:]`` and run it to its end; the exit code."""
    import runpy

    os.setpgid(0, 0)  # a terminal's Ctrl-C reaches skiffd alone, which stops the services in order
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # as `setpriv --pdeathsig TERM` did
    if os.getppid() != skiffd:
        return 1  # skiffd died in between
    # skiffd's: its signal handlers, descriptors (pidfile lock, selector, pidfds) and finalizers.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for fd in [int(n) for n in os.listdir("/proc/self/fd")]:
        if fd > 2:
            with contextlib.suppress(OSError):
                os.close(fd)
    for finalizer in list(weakref.finalize._registry):  # type: ignore[attr-defined]
        finalizer.atexit = False
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
