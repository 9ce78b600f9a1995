"""Images: the public image calls over graphsvc's ImageService.

Both APIs carry the shared ``skiff.types.v1.Image``; the gateway adds what only it
knows (how many containers use the image).
"""

from __future__ import annotations

from collections.abc import Iterator

from skiff.api.v1 import api_pb2
from skiff.apiserver import events
from skiff.apiserver.backends import GraphBackend
from skiff.apiserver.callctx import Call
from skiff.common import errors
from skiff.graph.v1 import graph_pb2
from skiff.types.v1 import types_pb2


def to_api_image(image: types_pb2.Image, containers: int = 0) -> types_pb2.Image:
    out = types_pb2.Image()
    out.CopyFrom(image)
    out.containers = containers
    return out


def _to_graph_import(requests: Iterator[api_pb2.ImportImageRequest]) -> Iterator[graph_pb2.ImportImageRequest]:
    """Chunk by chunk, as they arrive: a tarball is never held in memory as a whole."""
    first = True
    for req in requests:
        part = req.WhichOneof("part")
        if first and part != "metadata":
            raise errors.InvalidArgument("the first import request must carry the metadata")
        if part == "metadata":
            if not first:
                raise errors.InvalidArgument("import metadata may only come first")
            meta = req.metadata
            yield graph_pb2.ImportImageRequest(
                metadata=graph_pb2.ImportImageMetadata(
                    reference=meta.reference, changes=meta.changes, message=meta.message
                )
            )
        elif part == "chunk":
            yield graph_pb2.ImportImageRequest(chunk=req.chunk)
        first = False
    if first:
        raise errors.InvalidArgument("empty import: the first request must carry the metadata")


class Images:
    def __init__(self, graph: GraphBackend):
        self._graph = graph

    def import_image(self, requests: Iterator[api_pb2.ImportImageRequest], call: Call) -> types_pb2.Image:
        # A malformed request stream is detected while grpc sends it, in grpc's thread;
        # peek at the first message here so that the common mistake gets a clear error.
        first = next(requests, None)
        if first is None or first.WhichOneof("part") != "metadata":
            raise errors.InvalidArgument("the first import request must carry the metadata")

        def replay() -> Iterator[api_pb2.ImportImageRequest]:
            yield first
            yield from requests

        image = to_api_image(self._graph.import_image(_to_graph_import(replay()), call))
        events.image_of(image, "import")
        return image

    def list_images(self, req: api_pb2.ListImagesRequest) -> list[types_pb2.Image]:
        images = self._graph.list_images(graph_pb2.ListImagesRequest(all=req.all, filters=req.filters))
        return [to_api_image(i) for i in images]

    def inspect(self, ref: str) -> types_pb2.Image:
        image = self._graph.get_image(ref)
        users = sum(1 for c in self._graph.list_containers() if c.image_id == image.id)
        return to_api_image(image, containers=users)

    def remove(self, req: api_pb2.RemoveImageRequest) -> list[types_pb2.ImageDeleteItem]:
        image_id = events.image_id(self._graph, req.image)
        resp = self._graph.remove_image(graph_pb2.RemoveImageRequest(image=req.image, force=req.force))
        events.image_removed(image_id, resp.items)
        return list(resp.items)

    def pull(self, req: api_pb2.PullImageRequest, call: Call) -> Iterator[api_pb2.PullImageResponse]:
        greq = graph_pb2.PullImageRequest(reference=req.reference, platform=req.platform, auth=req.auth,
                                          mirror_auths=req.mirror_auths)
        for resp in self._graph.pull_image(greq, call):
            if resp.WhichOneof("part") == "image":
                events.image_ref(req.reference, "pull", resp.image)
                yield api_pb2.PullImageResponse(image=to_api_image(resp.image))
            else:
                yield api_pb2.PullImageResponse(progress=resp.progress)

    def push(self, req: api_pb2.PushImageRequest, call: Call) -> Iterator[api_pb2.PushImageResponse]:
        for resp in self._graph.push_image(graph_pb2.PushImageRequest(reference=req.reference, auth=req.auth), call):
            if resp.WhichOneof("part") == "digest":
                events.image_ref(req.reference, "push")
                yield api_pb2.PushImageResponse(digest=resp.digest)
            else:
                yield api_pb2.PushImageResponse(progress=resp.progress)

    def tag(self, req: api_pb2.TagImageRequest) -> None:
        self._graph.tag_image(req.source, req.target)
        events.image_tagged(self._graph, req.target)
