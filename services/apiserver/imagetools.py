"""The public ImageToolService: save, load, commit, diff, export, history, prune, login.

Archives and snapshots are graphsvc's business; the gateway relays the streams
chunk by chunk (never holding an archive whole) and adds what needs the other
services' or the image list's view: ``image prune`` removes through graphsvc's
``rmi`` so the same conflict rules apply.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import grpc

from skiff.api.v1 import api_pb2, api_pb2_grpc
from skiff.apiserver import events
from skiff.apiserver.backends import ExecBackend, GraphBackend
from skiff.apiserver.callctx import Call
from skiff.apiserver.images import to_api_image
from skiff.common import errors, grpcerr, prunefilter
from skiff.common.server import CALL_TIMEOUT
from skiff.graph.v1 import graph_pb2, graph_pb2_grpc
from skiff.types.v1 import types_pb2


class ToolsBackend(Protocol):
    def save_images(self, images: list[str], call: Call) -> Iterator[bytes]: ...

    def load_images(self, chunks: Iterator[bytes], call: Call) -> graph_pb2.LoadImagesResponse: ...

    def commit(self, req: graph_pb2.CommitContainerRequest) -> types_pb2.Image: ...

    def changes(self, container: str) -> list[types_pb2.FileChange]: ...

    def export(self, container: str, call: Call) -> Iterator[bytes]: ...

    def history(self, image: str) -> list[types_pb2.ImageHistoryItem]: ...

    def check_login(self, server: str, auth: types_pb2.RegistryAuth) -> graph_pb2.CheckRegistryLoginResponse: ...


class ToolsClient:
    """ToolsBackend over graphsvc's ImageToolService."""

    def __init__(self, channel: grpc.Channel):
        self._stub = graph_pb2_grpc.ImageToolServiceStub(channel)

    def _relay(self, rendezvous: Any, call: Call) -> Iterator[bytes]:
        call.on_cancel(rendezvous.cancel)
        with grpcerr.translated():
            for resp in rendezvous:
                yield resp.chunk

    def save_images(self, images: list[str], call: Call) -> Iterator[bytes]:
        return self._relay(self._stub.SaveImages(graph_pb2.SaveImagesRequest(images=images),
                                                 timeout=call.remaining()), call)

    def load_images(self, chunks: Iterator[bytes], call: Call) -> graph_pb2.LoadImagesResponse:
        with grpcerr.translated():
            future = self._stub.LoadImages.future((graph_pb2.LoadImagesRequest(chunk=c) for c in chunks),
                                                  timeout=call.remaining())
            call.on_cancel(future.cancel)
            resp: graph_pb2.LoadImagesResponse = future.result()
            return resp

    def commit(self, req: graph_pb2.CommitContainerRequest) -> types_pb2.Image:
        with grpcerr.translated():
            return self._stub.CommitContainer(req, timeout=None).image  # type: ignore[no-any-return]

    def changes(self, container: str) -> list[types_pb2.FileChange]:
        with grpcerr.translated():
            resp = self._stub.ListContainerChanges(
                graph_pb2.ListContainerChangesRequest(container=container), timeout=CALL_TIMEOUT)
            return list(resp.changes)

    def export(self, container: str, call: Call) -> Iterator[bytes]:
        return self._relay(self._stub.ExportContainer(graph_pb2.ExportContainerRequest(container=container),
                                                      timeout=call.remaining()), call)

    def history(self, image: str) -> list[types_pb2.ImageHistoryItem]:
        with grpcerr.translated():
            resp = self._stub.GetImageHistory(graph_pb2.GetImageHistoryRequest(image=image), timeout=CALL_TIMEOUT)
            return list(resp.items)

    def check_login(self, server: str, auth: types_pb2.RegistryAuth) -> graph_pb2.CheckRegistryLoginResponse:
        with grpcerr.translated():
            resp: graph_pb2.CheckRegistryLoginResponse = self._stub.CheckRegistryLogin(
                graph_pb2.CheckRegistryLoginRequest(server=server, auth=auth), timeout=CALL_TIMEOUT)
            return resp


class ImageTools:
    def __init__(self, tools: ToolsBackend, graph: GraphBackend):
        self._tools = tools
        self._graph = graph

    def prune(self, all_: bool, filters: Sequence[types_pb2.Filter] = ()) -> api_pb2.PruneImagesResponse:
        """Docker's ``image prune``: untagged images, or with ``all`` every image no container uses;
        only those ``filters`` keep (``until``: created before; ``label``/``label!``: the config's labels;
        ``dangling=false``: as ``all``)."""
        for f in filters:
            if f.key == "dangling":
                if f.value.lower() not in ("true", "false", "1", "0"):
                    raise errors.InvalidArgument(f"invalid filter 'dangling={f.value}'",
                                                 reason=errors.UNSUPPORTED_FILTER)
                all_ = all_ or f.value.lower() in ("false", "0")
        keep = prunefilter.parse((f.key, f.value) for f in filters if f.key != "dangling")
        used = {c.image_id for c in self._graph.list_containers()}
        items: list[types_pb2.ImageDeleteItem] = []
        reclaimed = 0
        for image in self._graph.list_images(graph_pb2.ListImagesRequest()):
            if image.id in used or (image.repo_tags and not all_):
                continue
            if not keep.matches(image.created.seconds * 10**9 + image.created.nanos, image.config.labels):
                continue
            try:
                resp = self._graph.remove_image(graph_pb2.RemoveImageRequest(image=image.id, force=bool(all_)))
            except (errors.Conflict, errors.NotFound):
                continue
            items.extend(resp.items)
            reclaimed += image.size
        return api_pb2.PruneImagesResponse(items=items, space_reclaimed=reclaimed)


class ImageToolServicer(api_pb2_grpc.ImageToolServiceServicer):
    def __init__(self, tools: ToolsBackend, graph: GraphBackend, exec_: ExecBackend | None = None):
        self._tools = tools
        self._graph = graph
        self._exec = exec_
        self._domain = ImageTools(tools, graph)

    def _commit(self, request: api_pb2.CommitContainerRequest) -> types_pb2.Image:
        image = self._commit_image(request)
        events.committed(request, image)
        return image

    def _commit_image(self, request: api_pb2.CommitContainerRequest) -> types_pb2.Image:
        """Docker's commit: a running container is frozen while its layer is read, then thawed."""
        greq = graph_pb2.CommitContainerRequest(
            container=request.container, reference=request.reference, message=request.message,
            author=request.author, changes=request.changes)
        paused = ""
        if not request.no_pause and self._exec is not None:
            cid = self._graph.get_container(request.container).id
            try:
                task = self._exec.get_task(cid)
            except errors.NotFound:
                task = None
            if task is not None and task.state.status == types_pb2.CONTAINER_STATUS_RUNNING:
                self._exec.pause_task(cid)
                paused = cid
                greq.container = cid
        try:
            return self._tools.commit(greq)
        finally:
            if paused:
                self._exec.resume_task(paused)  # type: ignore[union-attr]

    def SaveImages(self, request: api_pb2.SaveImagesRequest,
                   context: grpc.ServicerContext) -> Iterator[api_pb2.SaveImagesResponse]:
        with grpcerr.handle(context):
            for chunk in self._tools.save_images(list(request.images), Call.from_context(context)):
                yield api_pb2.SaveImagesResponse(chunk=chunk)
            events.images_saved(self._graph, list(request.images))

    def LoadImages(self, request_iterator: Iterator[api_pb2.LoadImagesRequest],
                   context: grpc.ServicerContext) -> api_pb2.LoadImagesResponse:
        with grpcerr.handle(context):
            resp = self._tools.load_images((r.chunk for r in request_iterator), Call.from_context(context))
            events.images_loaded(resp.images)
            return api_pb2.LoadImagesResponse(messages=resp.messages,
                                              images=[to_api_image(i) for i in resp.images])
        raise AssertionError("unreachable")

    def CommitContainer(self, request: api_pb2.CommitContainerRequest,
                        context: grpc.ServicerContext) -> api_pb2.CommitContainerResponse:
        with grpcerr.handle(context):
            image = self._commit(request)
            return api_pb2.CommitContainerResponse(image=to_api_image(image))
        raise AssertionError("unreachable")

    def ListContainerChanges(self, request: api_pb2.ListContainerChangesRequest,
                             context: grpc.ServicerContext) -> api_pb2.ListContainerChangesResponse:
        with grpcerr.handle(context):
            return api_pb2.ListContainerChangesResponse(changes=self._tools.changes(request.container))
        raise AssertionError("unreachable")

    def ExportContainer(self, request: api_pb2.ExportContainerRequest,
                        context: grpc.ServicerContext) -> Iterator[api_pb2.ExportContainerResponse]:
        with grpcerr.handle(context):
            for chunk in self._tools.export(request.container, Call.from_context(context)):
                yield api_pb2.ExportContainerResponse(chunk=chunk)

    def GetImageHistory(self, request: api_pb2.GetImageHistoryRequest,
                        context: grpc.ServicerContext) -> api_pb2.GetImageHistoryResponse:
        with grpcerr.handle(context):
            return api_pb2.GetImageHistoryResponse(items=self._tools.history(request.image))
        raise AssertionError("unreachable")

    def PruneImages(self, request: api_pb2.PruneImagesRequest,
                    context: grpc.ServicerContext) -> api_pb2.PruneImagesResponse:
        with grpcerr.handle(context):
            return self._domain.prune(request.all, request.filters)
        raise AssertionError("unreachable")

    def Login(self, request: api_pb2.LoginRequest, context: grpc.ServicerContext) -> api_pb2.LoginResponse:
        with grpcerr.handle(context):
            resp = self._tools.check_login(request.server, request.auth)
            return api_pb2.LoginResponse(status=resp.status, identity_token=resp.identity_token)
        raise AssertionError("unreachable")


class NoTools:
    """The backend of a gateway built without graphsvc's ImageToolService (unit tests over fakes)."""

    def __getattr__(self, name: str) -> Any:
        def unavailable(*_: Any, **__: Any) -> Any:
            raise errors.Unavailable("graphsvc's ImageToolService is not configured")

        return unavailable
