"""Is a service up? Ask it over ``grpc.health.v1``, with a short deadline."""

from __future__ import annotations

import os

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from skiff.common import address
from skiff.common.tls import TLSFiles

# A fresh channel per probe, with its own subchannel pool: grpc otherwise shares a
# subchannel (and its reconnect back-off, 1 s and up) between channels to one target,
# and a probe right after a refused connection would fail without trying.
_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 200),
]


def probe(target: str, timeout: float = 0.5, tls: TLSFiles | None = None) -> bool:
    """True if the server at ``target`` (unix:// or tcp://) answers Check("") with SERVING."""
    addr = address.parse(target)
    if addr.scheme == "unix" and not os.path.exists(addr.target):
        return False  # not bound yet: no need to spend a channel on it
    if addr.scheme == "unix":
        channel = grpc.insecure_channel(addr.grpc_target(), options=_OPTIONS)
    else:
        channel = grpc.secure_channel(addr.grpc_target(), (tls or TLSFiles()).channel_credentials(), _OPTIONS)
    with channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout, wait_for_ready=True
            )
        except grpc.RpcError:
            return False
    return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)
