"""Is a service up? Ask it over ``grpc.health.v1``, with a short deadline.

On a unix socket the question is asked in plain HTTP/2 (a handful of frames, below),
not with grpcio: skiffd must never initialise grpc, because it forks the services
(see zygote.py) and gRPC does not survive a fork once it runs. A tcp:// (TLS) probe,
only used when the gateway has no unix socket, goes through grpcio and ends the forking.
"""

from __future__ import annotations

import os
import socket
import struct
import time

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


#: True once this process has made a grpc channel (a tcp probe): no fork from here on.
used_grpc = False


def probe(target: str, timeout: float = 0.5, tls: TLSFiles | None = None) -> bool:
    """True if the server at ``target`` (unix:// or tcp://) answers Check("") with SERVING."""
    global used_grpc
    addr = address.parse(target)
    if addr.scheme == "unix" and not os.path.exists(addr.target):
        return False  # not bound yet: no need to spend a channel on it
    if addr.scheme == "unix":
        return probe_unix(addr.target, timeout)
    used_grpc = True
    channel = grpc.secure_channel(addr.grpc_target(), (tls or TLSFiles()).channel_credentials(), _OPTIONS)
    with channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout, wait_for_ready=True
            )
        except grpc.RpcError:
            return False
    return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)


# --- grpc.health.v1.Health/Check in plain HTTP/2 (RFC 9113), on a unix socket ------------------

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST_STREAM, _SETTINGS, _PING, _GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
_END_STREAM, _ACK, _END_HEADERS = 0x1, 0x1, 0x4
_SERVING = 1


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def _literal(name: str, value: str) -> bytes:
    """An HPACK literal header field without indexing, new name, no Huffman (all < 127 bytes)."""
    n, v = name.encode(), value.encode()
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


_REQUEST = (
    _PREFACE
    + _frame(_SETTINGS, 0, 0)
    + _frame(_HEADERS, _END_HEADERS, 1, b"".join(_literal(k, v) for k, v in (
        (":method", "POST"), (":scheme", "http"), (":path", "/grpc.health.v1.Health/Check"),
        (":authority", "localhost"), ("content-type", "application/grpc"), ("te", "trailers"))))
    # One gRPC message: not compressed, 0 bytes long (HealthCheckRequest with service "").
    + _frame(_DATA, _END_STREAM, 1, b"\x00\x00\x00\x00\x00")
)


def probe_unix(path: str, timeout: float = 0.5) -> bool:
    """Health/Check("") on the gRPC server at unix socket ``path``: True if SERVING."""
    deadline = time.monotonic() + timeout
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(_REQUEST)
            buf, body = b"", b""
            while True:
                while len(buf) < 9 or len(buf) < 9 + int.from_bytes(buf[:3], "big"):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    sock.settimeout(left)
                    chunk = sock.recv(65536)
                    if not chunk:
                        return False
                    buf += chunk
                size = int.from_bytes(buf[:3], "big")
                kind, flags, stream = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                payload, buf = buf[9:9 + size], buf[9 + size:]
                if kind == _SETTINGS and not flags & _ACK:
                    sock.sendall(_frame(_SETTINGS, _ACK, 0))
                elif kind == _PING and not flags & _ACK:
                    sock.sendall(_frame(_PING, _ACK, 0, payload))
                elif kind == _GOAWAY or (kind == _RST_STREAM and stream == 1):
                    return False
                elif kind == _DATA and stream == 1:
                    body += payload
                    if len(body) >= 5 and len(body) >= 5 + int.from_bytes(body[1:5], "big"):
                        return _status(body[5:5 + int.from_bytes(body[1:5], "big")]) == _SERVING
                if stream == 1 and flags & _END_STREAM:
                    return False  # trailers only: an error status
    except OSError:
        return False


def _status(message: bytes) -> int:
    """Field 1 (status, varint) of a HealthCheckResponse; 0 if absent."""
    i = 0
    while i < len(message):
        key, i = _varint(message, i)
        if key == (1 << 3):  # field 1, varint
            return _varint(message, i)[0]
        wire = key & 7
        if wire == 0:
            i = _varint(message, i)[1]
        elif wire == 2:
            n, i = _varint(message, i)
            i += n
        else:
            return 0
    return 0


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while i < len(data):
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7
    raise OSError("truncated varint")
