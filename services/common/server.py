"""Run one skiff gRPC service: sockets, health, reflection, readiness, shutdown.

Every service serves ``grpc.health.v1`` and server reflection so generic tools
(grpcurl, grpc_cli) can list and call it, and tells systemd when it is ready
(``Type=notify``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import stat
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from skiff.common import address, memory, trace
from skiff.common.tls import TLSFiles

log = logging.getLogger(__name__)

#: Deadline, in seconds, of an ordinary call between services.
CALL_TIMEOUT = 30.0


def add_common_arguments(parser: argparse.ArgumentParser, *, default_socket: str) -> None:
    parser.add_argument("-H", "--host", "--listen", dest="listen", action="append",
                        help=f"address to serve on (repeatable; default {default_socket})")
    parser.add_argument("--data-root", default="/var/lib/skiff", type=Path)
    parser.add_argument("--exec-root", default="/run/skiff", type=Path)
    parser.add_argument("-D", "--debug", action="store_true")
    parser.add_argument("-l", "--log-level", default="info",
                        choices=["debug", "info", "warn", "warning", "error", "fatal"])
    parser.add_argument("--tlscacert", type=Path)
    parser.add_argument("--tlscert", type=Path)
    parser.add_argument("--tlskey", type=Path)


def setup_logging(name: str, level: str, debug: bool = False) -> None:
    lvl = "debug" if debug else level
    lvl = {"warn": "warning", "fatal": "critical"}.get(lvl, lvl)
    logging.basicConfig(
        level=getattr(logging, lvl.upper()),
        format=f"%(asctime)s {name}[%(process)d] %(levelname)s %(name)s: %(message)s",
    )


def _prepare_unix_socket(path: str) -> None:
    parent = Path(path).parent
    parent.mkdir(parents=True, exist_ok=True)
    os.chmod(parent, 0o700)  # root only: the socket is the engine
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)  # stale socket from a previous run
    except FileNotFoundError:
        pass


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) about our state; a no-op outside systemd."""
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return
    if target.startswith("@"):
        target = "\0" + target[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(target)
        sock.sendall(message.encode())


class Service:
    """A gRPC server with health and reflection, bound to unix and/or tcp addresses."""

    def __init__(self, name: str, listen: Iterable[str], tls: TLSFiles | None = None, max_workers: int = 256,
                 traces: trace.Store | None = None):
        self.name = name
        self.addresses = [address.parse(a) for a in listen]
        self.tls = tls or TLSFiles()
        # Spans of calls that carry a trace id (skiff.common.trace); the gateway keeps them in ``traces``.
        self.traces = traces
        # max_workers: a streaming call (attach, wait, logs -f) holds a thread for as long as it
        # lasts; 50 attached runs at once must not queue their starts behind them. Threads are made
        # on demand, so an idle service has only those it has used.
        # Threads left idle by a burst go away again, and the heap is trimmed then (common/memory.py).
        memory.limit_arenas()
        self.server = grpc.server(
            memory.ElasticThreadPool(max_workers=max_workers, thread_name_prefix=name),
            options=[("grpc.max_receive_message_length", 64 * 1024 * 1024), ("grpc.so_reuseport", 0)],
            interceptors=[trace.ServerInterceptor(name, traces)],
        )
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_names: list[str] = [health.SERVICE_NAME, reflection.SERVICE_NAME]
        #: called when the service starts to stop, before the grace period: ends calls that never
        #: end by themselves (event streams), so they do not hold the stop for the whole grace
        self.on_stop: list[Callable[[], None]] = []

    def add(self, register: Callable[[object, grpc.Server], None], servicer: object, full_name: str) -> None:
        register(servicer, self.server)
        self.service_names.append(full_name)

    def start(self) -> None:
        reflection.enable_server_reflection(self.service_names, self.server)
        for addr in self.addresses:
            if addr.scheme == "unix":
                _prepare_unix_socket(addr.target)
                self.server.add_insecure_port(addr.grpc_target())
            else:
                creds = self.tls.server_credentials()  # raises without mutual TLS
                port = self.server.add_secure_port(addr.grpc_target(), creds)
                if port == 0:
                    raise OSError(f"cannot listen on {addr}")
        self.server.start()
        for addr in self.addresses:
            if addr.scheme == "unix":
                os.chmod(addr.target, 0o660)
        for svc in ["", *self.service_names]:
            self.health.set(svc, health_pb2.HealthCheckResponse.SERVING)
        log.info("%s serving on %s", self.name, ", ".join(map(str, self.addresses)))
        sd_notify("READY=1")

    def stop(self, grace: float = 5.0) -> None:
        self.health.enter_graceful_shutdown()
        for hook in self.on_stop:
            hook()
        self.server.stop(grace).wait()
        for addr in self.addresses:
            if addr.scheme == "unix":
                try:
                    os.unlink(addr.target)
                except FileNotFoundError:
                    pass

    def run_until_signal(self) -> None:
        done = threading.Event()

        def on_signal(signum: int, _frame: object) -> None:
            log.info("%s: signal %d, stopping", self.name, signum)
            done.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        done.wait()
        sd_notify("STOPPING=1")
        self.stop()


# Between the daemon's own services: a call made while its peer is being restarted by
# skiffd waits (within its deadline) for the peer to serve again instead of failing, and
# reconnection is tried every 100 ms rather than with gRPC's default 1 s-to-2 min back-off.
_INTERNAL_OPTIONS = [
    ("grpc.service_config", json.dumps({"methodConfig": [{"name": [{}], "waitForReady": True}]})),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
    ("grpc.enable_retries", 1),
]


def channel(target: str, tls: TLSFiles | None = None, *, internal: bool = False) -> grpc.Channel:
    """A channel to a skiff address (unix:// or tcp://; tcp always uses TLS).

    ``internal`` is for calls between the daemon's services (see ``_INTERNAL_OPTIONS``);
    a client of the public API wants to hear at once that the daemon is down.
    """
    addr = address.parse(target)
    options: list[tuple[str, object]] = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    if internal:
        options += _INTERNAL_OPTIONS
    if addr.scheme == "unix":
        ch = grpc.insecure_channel(addr.grpc_target(), options=options)
    else:
        ch = grpc.secure_channel(addr.grpc_target(), (tls or TLSFiles()).channel_credentials(), options=options)
    # Between services: forward the current trace id and collect the callee's spans.
    return grpc.intercept_channel(ch, trace.ClientInterceptor()) if internal else ch
