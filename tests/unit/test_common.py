"""The shared plumbing: addresses, the error mapping over a real gRPC call, the protos."""

from __future__ import annotations

import subprocess
import sys
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from skiff.common import address, errors, grpcerr
from skiff.common.server import Service, channel
from skiff.common.tls import TLSFiles

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("given", "scheme", "target"),
    [
        ("unix:///run/skiff/skiff.sock", "unix", "/run/skiff/skiff.sock"),
        ("/tmp/x.sock", "unix", "/tmp/x.sock"),
        ("tcp://127.0.0.1:2376", "tcp", "127.0.0.1:2376"),
        ("tcp://localhost", "tcp", "localhost:2376"),
        ("tcp://[::1]:9", "tcp", "[::1]:9"),
    ],
)
def test_address_parse(given: str, scheme: str, target: str) -> None:
    addr = address.parse(given)
    assert (addr.scheme, addr.target) == (scheme, target)


@pytest.mark.parametrize("bad", ["http://x", "unix://relative", "tcp://", "tcp://h:99999", "fd://"])
def test_address_rejects(bad: str) -> None:
    with pytest.raises(errors.InvalidArgument):
        address.parse(bad)


def _raising_service(err: errors.SkiffError):  # a health servicer whose Check raises `err`
    class Raising(health_pb2_grpc.HealthServicer):
        def Check(self, request, context):
            with grpcerr.handle(context):
                raise err

    return Raising()


@pytest.mark.parametrize(
    "err",
    [
        errors.NotFound("No such image: nope", reason=errors.IMAGE_NOT_FOUND),
        errors.Conflict("name in use", reason=errors.NAME_IN_USE, metadata={"container_id": "abc"}),
        errors.InvalidArgument("bad name", reason=errors.INVALID_NAME),
        errors.FailedPrecondition("running", reason=errors.CONTAINER_RUNNING),
    ],
)
def test_error_round_trip_over_grpc(tmp_path: Path, err: errors.SkiffError) -> None:
    """A server raising a skiff error gives the client the same class, reason and metadata."""
    sock = f"unix://{tmp_path}/t.sock"
    server = grpc.server(futures.ThreadPoolExecutor(2))
    health_pb2_grpc.add_HealthServicer_to_server(_raising_service(err), server)
    server.add_insecure_port(sock)
    server.start()
    try:
        stub = health_pb2_grpc.HealthStub(channel(sock))
        with pytest.raises(grpc.RpcError) as info:
            stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert info.value.code() == err.code
        back = grpcerr.from_rpc_error(info.value)
        assert type(back) is type(err)
        assert back.reason == err.reason
        assert back.metadata == err.metadata
        assert back.message == err.message
    finally:
        server.stop(0)


def test_unexpected_exception_is_internal(tmp_path: Path) -> None:
    class Broken(health_pb2_grpc.HealthServicer):
        def Check(self, request, context):
            with grpcerr.handle(context):
                raise KeyError("x")

    sock = f"unix://{tmp_path}/t.sock"
    server = grpc.server(futures.ThreadPoolExecutor(2))
    health_pb2_grpc.add_HealthServicer_to_server(Broken(), server)
    server.add_insecure_port(sock)
    server.start()
    try:
        with pytest.raises(grpc.RpcError) as info:
            health_pb2_grpc.HealthStub(channel(sock)).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.INTERNAL
    finally:
        server.stop(0)


def test_service_socket_is_private_and_serves_health(tmp_path: Path) -> None:
    sock = tmp_path / "run" / "svc.sock"
    svc = Service("test", [f"unix://{sock}"])
    svc.start()
    try:
        assert sock.stat().st_mode & 0o777 == 0o660
        assert sock.parent.stat().st_mode & 0o777 == 0o700
        stub = health_pb2_grpc.HealthStub(channel(f"unix://{sock}"))
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        svc.stop(0)
    assert not sock.exists()


def test_tcp_without_mutual_tls_is_refused() -> None:
    svc = Service("test", ["tcp://127.0.0.1:0"], TLSFiles())
    with pytest.raises(errors.InvalidArgument, match="mutual TLS"):
        svc.start()
    svc.server.stop(0)


def test_generated_code_matches_protos() -> None:
    """`make protos` output is current: a fresh generation is identical."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "protos" / "generate.py"), "check", str(ROOT / "build" / "gen")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_protos_follow_the_style() -> None:
    """Enums start with <ENUM>_UNSPECIFIED = 0; every RPC has its own Request/Response and a comment."""
    import re

    for proto in (ROOT / "protos").rglob("*.proto"):
        text = proto.read_text()
        for enum, body in re.findall(r"enum (\w+) \{(.*?)\}", text, re.S):
            first = re.search(r"(\w+) = 0;", body)
            snake = re.sub(r"(?<!^)(?=[A-Z])", "_", enum).upper()
            assert first and first.group(1) == f"{snake}_UNSPECIFIED", (proto, enum)
        lines = text.splitlines()
        for i, line in enumerate(lines):
            m = re.match(r"\s*rpc (\w+)\((?:stream )?(\w+)\) returns \((?:stream )?(\w+)\)", line)
            if m:
                name, req, resp = m.groups()
                assert (req, resp) == (f"{name}Request", f"{name}Response"), (proto, line)
                assert lines[i - 1].strip().startswith("//"), f"{proto}: {name} has no comment"
