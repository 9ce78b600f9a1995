"""The public VolumeService: relayed to graphsvc, which keeps the volume records and data.

The public and internal messages have the same fields and numbers, so a request
is passed on re-encoded, and the answer comes back the same way.
"""

from __future__ import annotations

from typing import Any, Protocol

import grpc

from skiff.api.v1 import api_pb2, api_pb2_grpc
from skiff.apiserver import events
from skiff.common import errors, grpcerr
from skiff.common.server import CALL_TIMEOUT
from skiff.graph.v1 import graph_pb2, graph_pb2_grpc

#: public RPC -> (graphsvc RPC, its request type, the public response type)
_RPCS: dict[str, tuple[str, Any, Any]] = {
    "CreateVolume": ("CreateVolume", graph_pb2.CreateVolumeRequest, api_pb2.CreateVolumeResponse),
    "ListVolumes": ("ListVolumes", graph_pb2.ListVolumesRequest, api_pb2.ListVolumesResponse),
    "InspectVolume": ("GetVolume", graph_pb2.GetVolumeRequest, api_pb2.InspectVolumeResponse),
    "RemoveVolume": ("RemoveVolume", graph_pb2.RemoveVolumeRequest, api_pb2.RemoveVolumeResponse),
    "PruneVolumes": ("PruneVolumes", graph_pb2.PruneVolumesRequest, api_pb2.PruneVolumesResponse),
}


class VolumesBackend(Protocol):
    def volume_call(self, method: str, request: Any) -> Any: ...


class VolumesClient:
    """VolumesBackend over graphsvc's VolumeService."""

    def __init__(self, channel: grpc.Channel):
        self._stub = graph_pb2_grpc.VolumeServiceStub(channel)

    def volume_call(self, method: str, request: Any) -> Any:
        with grpcerr.translated():
            return getattr(self._stub, method)(request, timeout=CALL_TIMEOUT)


class NoVolumes:
    """The backend of a gateway built without graphsvc's VolumeService (unit tests over fakes)."""

    def volume_call(self, method: str, request: Any) -> Any:
        raise errors.Unavailable("graphsvc's VolumeService is not configured")


def relay(backend: VolumesBackend, public: str, request: Any) -> Any:
    method, req_type, resp_type = _RPCS[public]
    upstream = backend.volume_call(method, req_type.FromString(request.SerializeToString()))
    return resp_type.FromString(upstream.SerializeToString())


class VolumeServicer(api_pb2_grpc.VolumeServiceServicer):
    def __init__(self, backend: VolumesBackend):
        self._backend = backend

    def _call(self, name: str, request: Any, context: grpc.ServicerContext) -> Any:
        with grpcerr.handle(context):
            return relay(self._backend, name, request)
        raise AssertionError("unreachable")

    def CreateVolume(self, request: api_pb2.CreateVolumeRequest, context: grpc.ServicerContext
                     ) -> api_pb2.CreateVolumeResponse:
        resp = self._call("CreateVolume", request, context)
        events.volume(resp.volume.name, "create", resp.volume.driver)
        return resp  # type: ignore[no-any-return]

    def ListVolumes(self, request: api_pb2.ListVolumesRequest, context: grpc.ServicerContext
                    ) -> api_pb2.ListVolumesResponse:
        return self._call("ListVolumes", request, context)  # type: ignore[no-any-return]

    def InspectVolume(self, request: api_pb2.InspectVolumeRequest, context: grpc.ServicerContext
                      ) -> api_pb2.InspectVolumeResponse:
        return self._call("InspectVolume", request, context)  # type: ignore[no-any-return]

    def RemoveVolume(self, request: api_pb2.RemoveVolumeRequest, context: grpc.ServicerContext
                     ) -> api_pb2.RemoveVolumeResponse:
        resp = self._call("RemoveVolume", request, context)
        events.volume(request.name, "destroy")
        return resp  # type: ignore[no-any-return]

    def PruneVolumes(self, request: api_pb2.PruneVolumesRequest, context: grpc.ServicerContext
                     ) -> api_pb2.PruneVolumesResponse:
        resp = self._call("PruneVolumes", request, context)
        events.volumes_pruned(resp.names)
        return resp  # type: ignore[no-any-return]
