"""The connection to the gateway, made from the global flags.

grpc and the generated modules are imported on first use, not at import time,
so that ``skiff --help`` and argument errors stay fast. Every call goes through
:meth:`Client.translated`, which turns a failed call into the engine's error
class (with its ErrorInfo reason) or into :class:`DaemonUnreachable`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from skiff.cli.exits import CLIError, DaemonUnreachable

if TYPE_CHECKING:
    import grpc

    from skiff.api.v1 import api_pb2_grpc
    from skiff.common.tls import TLSFiles

DEFAULT_HOST = "unix:///run/skiff/skiff.sock"  # same as skiff.common.address.DEFAULT_HOST
#: Deadline, in seconds, of an ordinary unary call; streams and waits have none.
CALL_TIMEOUT = 60.0


def client_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("skiff")
    except metadata.PackageNotFoundError:
        return "0.0.0-dev"


@dataclass(frozen=True)
class Options:
    """The global flags that say where the gateway is and how to reach it."""

    host: str = DEFAULT_HOST
    debug: bool = False
    tls: bool = False
    tlsverify: bool = False
    tlscacert: str | None = None
    tlscert: str | None = None
    tlskey: str | None = None


def cert_dir() -> Path:
    """``$SKIFF_CERT_PATH`` or ``~/.skiff``, like Docker's ``~/.docker``."""
    return Path(os.environ.get("SKIFF_CERT_PATH") or Path.home() / ".skiff")


def tls_paths(opts: Options) -> tuple[Path | None, Path | None, Path | None]:
    """CA, certificate and key for a tcp:// host.

    An explicit flag wins; otherwise the file in :func:`cert_dir` is used if it
    exists. With ``--tlsverify`` the CA is required (we must check the server).
    """
    base = cert_dir()

    def pick(flag: str | None, name: str) -> Path | None:
        if flag:
            return Path(flag).expanduser()
        default = base / name
        return default if default.exists() else None

    ca, cert, key = pick(opts.tlscacert, "ca.pem"), pick(opts.tlscert, "cert.pem"), pick(opts.tlskey, "key.pem")
    if opts.tlsverify and ca is None:
        raise CLIError(f"could not read CA certificate {base / 'ca.pem'}: no such file or directory")
    if (cert is None) != (key is None):
        raise CLIError("TLS needs both a client certificate (--tlscert) and its key (--tlskey)")
    return ca, cert, key


class Client:
    """Stubs of the three public services over one channel."""

    def __init__(self, opts: Options):
        self.opts = opts
        self.host = opts.host
        #: the trace id every call carries with --debug / $SKIFF_TRACE (see skiff.cli.tracing)
        self.trace_id: str | None = None

    def _tls(self) -> TLSFiles | None:
        from skiff.common.tls import TLSFiles

        if not self.host.startswith("tcp://"):
            return None  # unix sockets are protected by file permissions
        ca, cert, key = tls_paths(self.opts)
        return TLSFiles(ca=ca, cert=cert, key=key)

    @cached_property
    def raw_channel(self) -> grpc.Channel:
        from skiff.common.errors import SkiffError
        from skiff.common.server import channel

        try:
            return channel(self.host, self._tls())
        except SkiffError as err:  # a malformed -H, unreadable TLS files
            raise CLIError(str(err)) from None

    @cached_property
    def channel(self) -> grpc.Channel:
        from skiff.cli import tracing

        if not tracing.wanted(self.opts.debug):
            return self.raw_channel
        self.trace_id = tracing.new_id()
        return tracing.wrap(self.raw_channel, self.trace_id)

    @cached_property
    def system(self) -> api_pb2_grpc.SystemServiceStub:
        from skiff.api.v1 import api_pb2_grpc

        return api_pb2_grpc.SystemServiceStub(self.channel)

    @cached_property
    def images(self) -> api_pb2_grpc.ImageServiceStub:
        from skiff.api.v1 import api_pb2_grpc

        return api_pb2_grpc.ImageServiceStub(self.channel)

    @cached_property
    def containers(self) -> api_pb2_grpc.ContainerServiceStub:
        from skiff.api.v1 import api_pb2_grpc

        return api_pb2_grpc.ContainerServiceStub(self.channel)

    @contextlib.contextmanager
    def translated(self) -> Iterator[None]:
        """Re-raise a failed call as the engine's error, or as DaemonUnreachable.

        A status without ErrorInfo and with code UNAVAILABLE comes from the
        transport (nobody listening, TLS handshake failed), not from the gateway,
        which always attaches ErrorInfo, even when a backend is down.
        """
        import grpc

        from skiff.common.grpcerr import from_rpc_error

        try:
            yield
        except grpc.RpcError as err:
            code = err.code() if hasattr(err, "code") else None
            if code == grpc.StatusCode.UNAVAILABLE and not _has_status_details(err):
                detail = err.details() if hasattr(err, "details") else ""
                raise DaemonUnreachable(self.host, detail or "") from None
            raise from_rpc_error(err) from None

    def close(self) -> None:
        if self.trace_id is not None:
            from skiff.cli import tracing

            tracing.report(self, self.trace_id)
        if "raw_channel" in self.__dict__:
            self.raw_channel.close()


def _has_status_details(err: object) -> bool:
    trailers = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
    return any(key == "grpc-status-details-bin" for key, _ in trailers or ())
