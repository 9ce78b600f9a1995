"""The gateway's gRPC backend clients, against stand-in graph/exec/net servers.

The stand-ins serve the internal protos over the same fakes the gateway tests
use, so these tests check what the fakes cannot: deadlines, cancellation,
streaming and error translation across a real channel.
"""

from __future__ import annotations

import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from skiff.api.v1 import api_pb2
from skiff.apiserver.backends import ExecClient, GraphClient, NetClient
from skiff.apiserver.callctx import Call
from skiff.apiserver.containers import Containers
from skiff.common import errors, grpcerr
from skiff.common.server import Service, channel
from skiff.exec.v1 import exec_pb2, exec_pb2_grpc
from skiff.graph.v1 import graph_pb2, graph_pb2_grpc
from skiff.net.v1 import net_pb2, net_pb2_grpc
from skiff.types.v1 import types_pb2

from .test_apiserver_fakes import FakeExec, FakeGraph, FakeNet


class ExecServicer(exec_pb2_grpc.ExecServiceServicer):
    def __init__(self, fake: FakeExec):
        self.fake = fake

    def StartTask(self, request, context):  # type: ignore[no-untyped-def]
        with grpcerr.handle(context):
            return exec_pb2.StartTaskResponse(task=self.fake.start_task(request.spec))

    def GetTask(self, request, context):  # type: ignore[no-untyped-def]
        with grpcerr.handle(context):
            return exec_pb2.GetTaskResponse(task=self.fake.get_task(request.id))

    def ListTasks(self, request, context):  # type: ignore[no-untyped-def]
        return exec_pb2.ListTasksResponse(tasks=self.fake.list_tasks())

    def KillTask(self, request, context):  # type: ignore[no-untyped-def]
        with grpcerr.handle(context):
            self.fake.kill_task(request.id, request.signal)
            return exec_pb2.KillTaskResponse()

    def WaitTask(self, request, context):  # type: ignore[no-untyped-def]
        with grpcerr.handle(context):
            return self.fake.wait_task(request.id, call=Call.from_context(context))

    def DeleteTask(self, request, context):  # type: ignore[no-untyped-def]
        with grpcerr.handle(context):
            self.fake.delete_task(request.id, request.force, request.remove_logs)
            return exec_pb2.DeleteTaskResponse()

    def ReadLogs(self, request, context):  # type: ignore[no-untyped-def]
        with grpcerr.handle(context):
            for entry in self.fake.read_logs(request, Call.from_context(context)):
                yield exec_pb2.ReadLogsResponse(entry=entry)

    def GetRuntimeInfo(self, request, context):  # type: ignore[no-untyped-def]
        return self.fake.get_runtime_info()


class ContainerGraphServicer(graph_pb2_grpc.ContainerGraphServiceServicer):
    def __init__(self, fake: FakeGraph):
        self.fake = fake

    def CreateContainer(self, request, context):  # type: ignore[no-untyped-def]
        with grpcerr.handle(context):
            return self.fake.create_container(request)

    def GetContainer(self, request, context):  # type: ignore[no-untyped-def]
        with grpcerr.handle(context):
            return graph_pb2.GetContainerResponse(container=self.fake.get_container(request.container))

    def ListContainers(self, request, context):  # type: ignore[no-untyped-def]
        return graph_pb2.ListContainersResponse(containers=self.fake.list_containers())

    def GetRootfs(self, request, context):  # type: ignore[no-untyped-def]
        with grpcerr.handle(context):
            return self.fake.get_rootfs(request.container_id)

    def DeleteContainer(self, request, context):  # type: ignore[no-untyped-def]
        with grpcerr.handle(context):
            self.fake.delete_container(request.container_id)
            return graph_pb2.DeleteContainerResponse()


class ImageServicer(graph_pb2_grpc.ImageServiceServicer):
    def __init__(self, fake: FakeGraph):
        self.fake = fake

    def ImportImage(self, request_iterator, context):  # type: ignore[no-untyped-def]
        with grpcerr.handle(context):
            return graph_pb2.ImportImageResponse(image=self.fake.import_image(request_iterator, Call()))

    def GetImage(self, request, context):  # type: ignore[no-untyped-def]
        with grpcerr.handle(context):
            return graph_pb2.GetImageResponse(image=self.fake.get_image(request.image))


class NetServicer(net_pb2_grpc.NetworkServiceServicer):
    def __init__(self, fake: FakeNet):
        self.fake = fake

    def CreateEndpoint(self, request, context):  # type: ignore[no-untyped-def]
        with grpcerr.handle(context):
            endpoint = self.fake.create_endpoint(request.container_id, request.network_mode)
            return net_pb2.CreateEndpointResponse(endpoint=endpoint)

    def GetEndpoint(self, request, context):  # type: ignore[no-untyped-def]
        with grpcerr.handle(context):
            return net_pb2.GetEndpointResponse(endpoint=self.fake.get_endpoint(request.container_id))

    def ListEndpoints(self, request, context):  # type: ignore[no-untyped-def]
        return net_pb2.ListEndpointsResponse(endpoints=self.fake.list_endpoints())

    def DeleteEndpoint(self, request, context):  # type: ignore[no-untyped-def]
        self.fake.delete_endpoint(request.container_id)
        return net_pb2.DeleteEndpointResponse()


@dataclass
class Upstream:
    graph: FakeGraph
    exec: FakeExec
    net: FakeNet
    graph_client: GraphClient
    exec_client: ExecClient
    net_client: NetClient


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    graph, exec_, net = FakeGraph(), FakeExec(), FakeNet()
    with tempfile.TemporaryDirectory(prefix="skiff-up-") as tmp:
        target = f"unix://{tmp}/up.sock"
        service = Service("upstream", [target])
        service.add(graph_pb2_grpc.add_ContainerGraphServiceServicer_to_server, ContainerGraphServicer(graph),
                    "skiff.graph.v1.ContainerGraphService")
        service.add(graph_pb2_grpc.add_ImageServiceServicer_to_server, ImageServicer(graph),
                    "skiff.graph.v1.ImageService")
        service.add(exec_pb2_grpc.add_ExecServiceServicer_to_server, ExecServicer(exec_), "skiff.exec.v1.ExecService")
        service.add(net_pb2_grpc.add_NetworkServiceServicer_to_server, NetServicer(net), "skiff.net.v1.NetworkService")
        service.start()
        ch = channel(target)
        try:
            yield Upstream(graph, exec_, net, GraphClient(ch), ExecClient(ch), NetClient(ch))
        finally:
            ch.close()
            service.stop(0)


def test_errors_keep_class_and_reason(upstream: Upstream) -> None:
    with pytest.raises(errors.NotFound) as info:
        upstream.graph_client.get_container("nope")
    assert info.value.reason == errors.CONTAINER_NOT_FOUND
    with pytest.raises(errors.NotFound) as info:
        upstream.exec_client.get_task("nope")
    assert info.value.reason == "TASK_NOT_FOUND"


def test_wait_task_deadline_and_cancel(upstream: Upstream) -> None:
    upstream.exec.start_task(exec_pb2.TaskSpec(id="t", args=["sleep"]))
    started = time.monotonic()
    with pytest.raises(errors.DeadlineExceeded):
        upstream.exec_client.wait_task("t", timeout=0.2)
    assert time.monotonic() - started < 2
    call = Call()
    threading.Timer(0.2, call.cancel).start()
    with pytest.raises(errors.DeadlineExceeded) as info:
        upstream.exec_client.wait_task("t", call=call)
    assert info.value.reason == "CANCELLED"
    threading.Timer(0.1, upstream.exec.kill_task, ("t", signal.SIGKILL)).start()
    assert upstream.exec_client.wait_task("t", call=Call(5)).exit_code == 137


def test_read_logs_stream_and_cancel(upstream: Upstream) -> None:
    upstream.exec.start_task(exec_pb2.TaskSpec(id="t", args=["sleep"]))
    upstream.exec.emit("t", b"a\n")
    call = Call()
    stream = upstream.exec_client.read_logs(
        exec_pb2.ReadLogsRequest(id="t", follow=True, tail=-1, stdout=True), call)
    assert next(stream).data == b"a\n"
    threading.Timer(0.1, call.cancel).start()
    with pytest.raises(errors.SkiffError):
        next(stream)  # blocked in follow until cancelled
    with pytest.raises(errors.NotFound):
        next(upstream.exec_client.read_logs(exec_pb2.ReadLogsRequest(id="nope")))


def test_import_streams(upstream: Upstream) -> None:
    def requests() -> Iterator[graph_pb2.ImportImageRequest]:
        yield graph_pb2.ImportImageRequest(metadata=graph_pb2.ImportImageMetadata(reference="x:1"))
        for _ in range(3):
            yield graph_pb2.ImportImageRequest(chunk=b"y" * 100_000)

    image = upstream.graph_client.import_image(requests(), Call(10))
    assert image.repo_tags == ["x:1"] and image.size == 300_000


def test_orchestration_over_real_channels(upstream: Upstream) -> None:
    """Stop's escalation relies on a real DEADLINE_EXCEEDED from WaitTask."""
    containers = Containers(upstream.graph_client, upstream.exec_client, upstream.net_client, poll_interval=0.02)
    try:
        req = api_pb2.CreateContainerRequest(config=types_pb2.ContainerConfig(
            image="busybox", cmd=types_pb2.StringList(values=["trap"])))
        cid = containers.create(req).id
        containers.start(cid)
        assert containers.inspect(cid).state.status == types_pb2.CONTAINER_STATUS_RUNNING
        containers.stop(cid, 1, "")
        assert upstream.exec.signals[cid] == [signal.SIGTERM, signal.SIGKILL]
        assert containers.wait(cid, 0, Call(5)).exit_code == 137
        containers.remove(cid, force=False)
        assert upstream.graph.containers == {} and upstream.net.endpoints == {}
    finally:
        containers.close()
