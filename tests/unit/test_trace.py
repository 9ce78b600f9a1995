"""Per-phase traces (skiff.common.trace): ids carried through gRPC, spans collected, GetTrace."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from skiff.api.v1 import api_pb2, api_pb2_grpc
from skiff.apiserver.containers import Containers
from skiff.apiserver.server import build
from skiff.cli import tracing
from skiff.common import trace
from skiff.common.server import Service, channel
from skiff.types.v1 import types_pb2

from .test_apiserver_fakes import FakeExec, FakeGraph, FakeNet


@pytest.fixture
def gateway() -> Iterator[tuple[grpc.Channel, FakeExec]]:
    graph, exec_, net = FakeGraph(), FakeExec(), FakeNet()
    containers = Containers(graph, exec_, net, poll_interval=0.02, watch_interval=0.2)
    with tempfile.TemporaryDirectory(prefix="skiff-trace-") as tmp:
        sock = f"unix://{tmp}/api.sock"
        gw = build([sock], graph, exec_, net, containers=containers)
        gw.service.start()
        ch = grpc.insecure_channel(sock)
        try:
            yield ch, exec_
        finally:
            ch.close()
            containers.close()
            gw.service.stop(0)


def test_traced_calls_are_kept_and_returned_by_get_trace(gateway: tuple[grpc.Channel, FakeExec]) -> None:
    ch, exec_ = gateway
    api, system = api_pb2_grpc.ContainerServiceStub(ch), api_pb2_grpc.SystemServiceStub(ch)
    md = ((trace.TRACE_KEY, "abc123"),)
    config = types_pb2.ContainerConfig(image="busybox")
    cid = api.CreateContainer(api_pb2.CreateContainerRequest(config=config), timeout=5, metadata=md).id
    api.StartContainer(api_pb2.StartContainerRequest(container=cid), timeout=5, metadata=md)
    with exec_.cond:
        exec_._exit(cid, 3)
    assert api.WaitContainer(api_pb2.WaitContainerRequest(container=cid), timeout=5, metadata=md).exit_code == 3
    spans = system.GetTrace(api_pb2.GetTraceRequest(trace_id="abc123"), timeout=5).spans
    names = [(s.service, s.name) for s in spans]
    for want in ["CreateContainer", "resolve image, record", "StartContainer", "prepare rootfs", "network",
                 "spawn, exec", "WaitContainer"]:
        assert ("apiserver", want) in names
    starts = [s.start_unix_nanos for s in spans]
    assert starts == sorted(starts)
    assert all(s.duration_nanos >= 0 for s in spans)
    # The create span encloses the phase recorded inside it.
    create = next(s for s in spans if s.name == "CreateContainer")
    inner = next(s for s in spans if s.name == "resolve image, record")
    assert create.start_unix_nanos <= inner.start_unix_nanos
    assert inner.start_unix_nanos + inner.duration_nanos <= create.start_unix_nanos + create.duration_nanos


def test_untraced_calls_record_nothing(gateway: tuple[grpc.Channel, FakeExec]) -> None:
    ch, _ = gateway
    api, system = api_pb2_grpc.ContainerServiceStub(ch), api_pb2_grpc.SystemServiceStub(ch)
    api.CreateContainer(api_pb2.CreateContainerRequest(config=types_pb2.ContainerConfig(image="busybox")), timeout=5)
    with pytest.raises(grpc.RpcError) as info:
        system.GetTrace(api_pb2.GetTraceRequest(trace_id="never-sent"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_spans_of_a_backend_come_back_through_trailing_metadata() -> None:
    """Between services: the client interceptor forwards the id, the callee returns its spans."""
    with tempfile.TemporaryDirectory(prefix="skiff-trace-") as tmp:
        backend = Service("backend", [f"unix://{tmp}/b.sock"])
        backend.start()
        ch = channel(f"unix://{tmp}/b.sock", internal=True)
        try:
            mine = trace.Trace("t1", "gateway")
            untraced = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert untraced.status == health_pb2.HealthCheckResponse.SERVING
            with trace.activate(mine), trace.span("outer"):
                health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
            done = threading.Event()
            for _ in range(100):  # the spans arrive in a done-callback of the call
                if any(s.service == "backend" for s in mine.spans()):
                    break
                done.wait(0.05)
            names = [(s.service, s.name) for s in mine.spans()]
            assert ("backend", "Check") in names and ("gateway", "outer") in names
        finally:
            ch.close()
            backend.stop(0)


def test_span_without_a_trace_is_free() -> None:
    assert trace.current() is None
    with trace.span("nothing"):
        pass
    trace.event("nothing", 1, 2)  # no trace: ignored, no error


def test_store_forgets_the_oldest() -> None:
    store = trace.Store("gw", keep=2)
    for i in range(3):
        store.get_or_create(str(i))
    assert store.get("0") is None and store.get("2") is not None


def test_cli_table_is_in_time_order() -> None:
    rows = [("execsvc", "b", 2_000_000, 1_000_000), ("apiserver", "a", 1_000_000, 5_000_000)]
    table = tracing.format_table(rows, 0).splitlines()
    assert "apiserver" in table[1] and "a" in table[1] and "execsvc" in table[2]
    assert table[1].split()[:2] == ["1.0", "5.0"]
