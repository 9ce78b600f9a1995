"""TLS material for tcp:// endpoints. TCP is only ever served with mutual TLS."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from skiff.common.errors import InvalidArgument


@dataclass(frozen=True)
class TLSFiles:
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    @staticmethod
    def _read(path: Path | None, what: str) -> bytes:
        if path is None:
            raise InvalidArgument(f"TLS needs a {what} file")
        try:
            return Path(path).read_bytes()
        except OSError as err:
            raise InvalidArgument(f"cannot read TLS {what} {path}: {err.strerror}") from None

    def server_credentials(self) -> grpc.ServerCredentials:
        """Server certificate plus a client CA: clients must present a certificate."""
        if self.ca is None or self.cert is None or self.key is None:
            raise InvalidArgument(
                "refusing to listen on tcp:// without mutual TLS: give --tlscacert, --tlscert and --tlskey"
            )
        return grpc.ssl_server_credentials(
            [(self._read(self.key, "key"), self._read(self.cert, "certificate"))],
            root_certificates=self._read(self.ca, "CA certificate"),
            require_client_auth=True,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        ca = self._read(self.ca, "CA certificate") if self.ca else None
        key = self._read(self.key, "key") if self.key else None
        cert = self._read(self.cert, "certificate") if self.cert else None
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
