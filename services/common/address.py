"""Endpoint addresses in Docker's form: ``unix:///path`` or ``tcp://host:port``."""

from __future__ import annotations

from dataclasses import dataclass

from skiff.common.errors import InvalidArgument

DEFAULT_HOST = "unix:///run/skiff/skiff.sock"
DEFAULT_TCP_PORT = 2376


@dataclass(frozen=True)
class Address:
    scheme: str  # "unix" or "tcp"
    target: str  # socket path, or host:port

    def grpc_target(self) -> str:
        """The target string grpc's channel and server functions take."""
        return f"unix://{self.target}" if self.scheme == "unix" else self.target

    def __str__(self) -> str:
        return f"{self.scheme}://{self.target}"


def parse(address: str) -> Address:
    if address.startswith("unix://"):
        path = address[len("unix://") :]
        if not path.startswith("/"):
            raise InvalidArgument(f"unix socket path must be absolute: {address!r}")
        return Address("unix", path)
    if address.startswith("/"):
        return Address("unix", address)
    if address.startswith("tcp://"):
        hostport = address[len("tcp://") :].rstrip("/")
        if not hostport:
            raise InvalidArgument(f"missing host in {address!r}")
        if hostport.startswith("["):  # [::1]:2376
            if "]:" not in hostport:
                hostport += f":{DEFAULT_TCP_PORT}"
        elif ":" not in hostport:
            hostport += f":{DEFAULT_TCP_PORT}"
        port = hostport.rsplit(":", 1)[1]
        if not port.isdigit() or not 0 <= int(port) <= 65535:
            raise InvalidArgument(f"invalid port in {address!r}")
        return Address("tcp", hostport)
    raise InvalidArgument(f"unsupported address {address!r}: use unix:///path or tcp://host:port")
