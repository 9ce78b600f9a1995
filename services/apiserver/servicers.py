"""gRPC servicers of the public API: proto in, domain call, proto out. No logic here.

Errors of every kind leave through :func:`skiff.common.grpcerr.handle`, so the
reason an upstream service gave (IMAGE_NOT_FOUND, COMMAND_NOT_FOUND, ...)
reaches the client unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import grpc

from skiff.api.v1 import api_pb2, api_pb2_grpc
from skiff.apiserver import events
from skiff.apiserver.callctx import Call
from skiff.apiserver.containers import Containers
from skiff.apiserver.copying import Copies
from skiff.apiserver.exec import Execs
from skiff.apiserver.images import Images
from skiff.apiserver.lifecycle import LifecycleRPCs
from skiff.apiserver.removal import Removals
from skiff.apiserver.system import System
from skiff.common import grpcerr

T = TypeVar("T")


def _unary(context: grpc.ServicerContext, fn: Callable[[], T]) -> T:
    with grpcerr.handle(context):
        return fn()
    raise AssertionError("unreachable: handle() aborts the call")


def _stream(context: grpc.ServicerContext, responses: Callable[[], Iterator[T]]) -> Iterator[T]:
    with grpcerr.handle(context):
        yield from responses()


class SystemServicer(api_pb2_grpc.SystemServiceServicer):
    def __init__(self, system: System):
        self._system = system

    def GetVersion(
        self, request: api_pb2.GetVersionRequest, context: grpc.ServicerContext
    ) -> api_pb2.GetVersionResponse:
        return _unary(context, self._system.version)

    def GetInfo(self, request: api_pb2.GetInfoRequest, context: grpc.ServicerContext) -> api_pb2.GetInfoResponse:
        return _unary(context, self._system.info)

    def GetTrace(self, request: api_pb2.GetTraceRequest, context: grpc.ServicerContext) -> api_pb2.GetTraceResponse:
        return _unary(context, lambda: self._system.trace(request.trace_id))

    def Events(self, request: api_pb2.EventsRequest,
               context: grpc.ServicerContext) -> Iterator[api_pb2.EventsResponse]:
        def responses() -> Iterator[api_pb2.EventsResponse]:
            def subscribed() -> None:  # the client knows from here on it misses nothing
                context.send_initial_metadata((("skiff-events", "1"),))

            for ev in events.HUB.stream(request, lambda: not context.is_active(), subscribed):
                yield api_pb2.EventsResponse(event=ev)

        return _stream(context, responses)


class ImageServicer(api_pb2_grpc.ImageServiceServicer):
    def __init__(self, images: Images):
        self._images = images

    def ImportImage(
        self, request_iterator: Iterator[api_pb2.ImportImageRequest], context: grpc.ServicerContext
    ) -> api_pb2.ImportImageResponse:
        return _unary(context, lambda: api_pb2.ImportImageResponse(
            image=self._images.import_image(request_iterator, Call.from_context(context))))

    def ListImages(
        self, request: api_pb2.ListImagesRequest, context: grpc.ServicerContext
    ) -> api_pb2.ListImagesResponse:
        return _unary(context, lambda: api_pb2.ListImagesResponse(images=self._images.list_images(request)))

    def InspectImage(
        self, request: api_pb2.InspectImageRequest, context: grpc.ServicerContext
    ) -> api_pb2.InspectImageResponse:
        return _unary(context, lambda: api_pb2.InspectImageResponse(image=self._images.inspect(request.image)))

    def RemoveImage(
        self, request: api_pb2.RemoveImageRequest, context: grpc.ServicerContext
    ) -> api_pb2.RemoveImageResponse:
        return _unary(context, lambda: api_pb2.RemoveImageResponse(items=self._images.remove(request)))

    def PullImage(
        self, request: api_pb2.PullImageRequest, context: grpc.ServicerContext
    ) -> Iterator[api_pb2.PullImageResponse]:
        return _stream(context, lambda: self._images.pull(request, Call.from_context(context)))

    def PushImage(
        self, request: api_pb2.PushImageRequest, context: grpc.ServicerContext
    ) -> Iterator[api_pb2.PushImageResponse]:
        return _stream(context, lambda: self._images.push(request, Call.from_context(context)))

    def TagImage(self, request: api_pb2.TagImageRequest, context: grpc.ServicerContext) -> api_pb2.TagImageResponse:
        def tag() -> api_pb2.TagImageResponse:
            self._images.tag(request)
            return api_pb2.TagImageResponse()

        return _unary(context, tag)


class ContainerServicer(LifecycleRPCs, api_pb2_grpc.ContainerServiceServicer):
    def __init__(self, containers: Containers):
        self._containers = containers

    def CreateContainer(
        self, request: api_pb2.CreateContainerRequest, context: grpc.ServicerContext
    ) -> api_pb2.CreateContainerResponse:
        return _unary(context, lambda: self._containers.create(request))

    def StartContainer(
        self, request: api_pb2.StartContainerRequest, context: grpc.ServicerContext
    ) -> api_pb2.StartContainerResponse:
        _unary(context, lambda: self._containers.start(request.container))
        return api_pb2.StartContainerResponse()

    def ListContainers(
        self, request: api_pb2.ListContainersRequest, context: grpc.ServicerContext
    ) -> api_pb2.ListContainersResponse:
        return _unary(context, lambda: self._containers.list_response(request.all, list(request.filters),
                                                                      request.size))

    def InspectContainer(
        self, request: api_pb2.InspectContainerRequest, context: grpc.ServicerContext
    ) -> api_pb2.InspectContainerResponse:
        return _unary(context, lambda: api_pb2.InspectContainerResponse(
            container=self._containers.inspect(request.container)))

    def StopContainer(
        self, request: api_pb2.StopContainerRequest, context: grpc.ServicerContext
    ) -> api_pb2.StopContainerResponse:
        timeout = request.timeout_seconds if request.HasField("timeout_seconds") else None
        _unary(context, lambda: self._containers.stop(request.container, timeout, request.signal))
        return api_pb2.StopContainerResponse()

    def KillContainer(
        self, request: api_pb2.KillContainerRequest, context: grpc.ServicerContext
    ) -> api_pb2.KillContainerResponse:
        _unary(context, lambda: self._containers.kill(request.container, request.signal))
        return api_pb2.KillContainerResponse()

    def RemoveContainer(
        self, request: api_pb2.RemoveContainerRequest, context: grpc.ServicerContext
    ) -> api_pb2.RemoveContainerResponse:
        _unary(context, lambda: self._containers.remove(request.container, request.force, request.remove_link,
                                                        request.remove_volumes))
        return api_pb2.RemoveContainerResponse()

    def RemoveContainers(
        self, request: api_pb2.RemoveContainersRequest, context: grpc.ServicerContext
    ) -> api_pb2.RemoveContainersResponse:
        return _unary(context, lambda: api_pb2.RemoveContainersResponse(results=Removals.of(self._containers).remove(
            list(request.containers), request.force, request.remove_volumes)))

    def WaitContainer(
        self, request: api_pb2.WaitContainerRequest, context: grpc.ServicerContext
    ) -> api_pb2.WaitContainerResponse:
        return _unary(context, lambda: self._containers.wait(
            request.container, request.condition, Call.from_context(context)))

    def ContainerLogs(
        self, request: api_pb2.ContainerLogsRequest, context: grpc.ServicerContext
    ) -> Iterator[api_pb2.ContainerLogsResponse]:
        def responses() -> Iterator[api_pb2.ContainerLogsResponse]:
            for entry in self._containers.logs(request, Call.from_context(context)):
                yield api_pb2.ContainerLogsResponse(entry=entry)

        return _stream(context, responses)

    def AttachContainer(
        self, request_iterator: Iterator[api_pb2.AttachContainerRequest], context: grpc.ServicerContext
    ) -> Iterator[api_pb2.AttachContainerResponse]:
        def attached(start: bool = False) -> None:
            metadata = (("skiff-attached", "1"),)
            context.send_initial_metadata(metadata + ((("skiff-attach-start", "1"),) if start else ()))

        return _stream(context, lambda: self._containers.attach(request_iterator, Call.from_context(context),
                                                                attached))

    def ExecContainer(
        self, request_iterator: Iterator[api_pb2.ExecContainerRequest], context: grpc.ServicerContext
    ) -> Iterator[api_pb2.ExecContainerResponse]:
        return _stream(context, lambda: Execs.of(self._containers).run(request_iterator, Call.from_context(context)))

    def StatContainerPath(
        self, request: api_pb2.StatContainerPathRequest, context: grpc.ServicerContext
    ) -> api_pb2.StatContainerPathResponse:
        return _unary(context, lambda: Copies.of(self._containers).stat(request))

    def CopyFromContainer(
        self, request: api_pb2.CopyFromContainerRequest, context: grpc.ServicerContext
    ) -> Iterator[api_pb2.CopyFromContainerResponse]:
        return _stream(context, lambda: Copies.of(self._containers).copy_from(request, Call.from_context(context)))

    def CopyToContainer(
        self, request_iterator: Iterator[api_pb2.CopyToContainerRequest], context: grpc.ServicerContext
    ) -> api_pb2.CopyToContainerResponse:
        return _unary(context, lambda: Copies.of(self._containers).copy_to(request_iterator,
                                                                            Call.from_context(context)))
