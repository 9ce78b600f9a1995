"""A gRPC client of netsvc implementing :class:`~skiff.netsvc.manager.Network` (for apiserver)."""

from __future__ import annotations

import grpc

from skiff.common import itemerr
from skiff.common.errors import SkiffError
from skiff.common.grpcerr import translated
from skiff.common.server import CALL_TIMEOUT
from skiff.net.v1 import net_pb2, net_pb2_grpc
from skiff.netsvc.model import Endpoint, EndpointOptions
from skiff.netsvc.servicer import from_proto, options_to_request


class NetworkClient:
    """Raises the same :mod:`skiff.common.errors` classes the local manager does."""

    def __init__(self, channel: grpc.Channel, timeout: float = CALL_TIMEOUT):
        self.stub = net_pb2_grpc.NetworkServiceStub(channel)
        self.timeout = timeout

    def create_endpoint(self, container_id: str, network_mode: str,
                        opts: EndpointOptions | None = None) -> Endpoint:
        req = options_to_request(container_id, network_mode, opts or EndpointOptions())
        with translated():
            return from_proto(self.stub.CreateEndpoint(req, timeout=self.timeout).endpoint)

    def get_endpoint(self, container_id: str) -> Endpoint:
        req = net_pb2.GetEndpointRequest(container_id=container_id)
        with translated():
            return from_proto(self.stub.GetEndpoint(req, timeout=self.timeout).endpoint)

    def list_endpoints(self) -> list[Endpoint]:
        with translated():
            resp = self.stub.ListEndpoints(net_pb2.ListEndpointsRequest(), timeout=self.timeout)
        return [from_proto(e) for e in resp.endpoints]

    def delete_endpoint(self, container_id: str, release: bool = False) -> None:
        with translated():
            self.stub.DeleteEndpoint(net_pb2.DeleteEndpointRequest(container_id=container_id, release=release),
                                     timeout=self.timeout)

    def delete_endpoints(self, container_ids: list[str]) -> dict[str, SkiffError]:
        with translated():
            resp = self.stub.DeleteEndpoints(net_pb2.DeleteEndpointsRequest(container_ids=container_ids),
                                             timeout=self.timeout)
        return {f.container_id: itemerr.error(f.code, f.message, f.reason) for f in resp.failed}
