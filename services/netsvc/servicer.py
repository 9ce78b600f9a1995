"""gRPC adapter for skiff.net.v1.NetworkService: protos in, domain calls, protos out."""

from __future__ import annotations

import grpc

from skiff.common.grpcerr import handle
from skiff.net.v1 import net_pb2, net_pb2_grpc
from skiff.netsvc.manager import Network
from skiff.netsvc.model import Endpoint


def to_proto(e: Endpoint) -> net_pb2.Endpoint:
    return net_pb2.Endpoint(container_id=e.container_id, network_mode=e.network_mode, netns_path=e.netns_path)


def from_proto(e: net_pb2.Endpoint) -> Endpoint:
    return Endpoint(e.container_id, e.network_mode, e.netns_path)


class NetworkServicer(net_pb2_grpc.NetworkServiceServicer):
    def __init__(self, network: Network):
        self.network = network

    def CreateEndpoint(self, request: net_pb2.CreateEndpointRequest, context: grpc.ServicerContext
                       ) -> net_pb2.CreateEndpointResponse:
        with handle(context):
            e = self.network.create_endpoint(request.container_id, request.network_mode)
            return net_pb2.CreateEndpointResponse(endpoint=to_proto(e))
        raise AssertionError("unreachable")

    def GetEndpoint(self, request: net_pb2.GetEndpointRequest, context: grpc.ServicerContext
                    ) -> net_pb2.GetEndpointResponse:
        with handle(context):
            e = self.network.get_endpoint(request.container_id)
            return net_pb2.GetEndpointResponse(endpoint=to_proto(e))
        raise AssertionError("unreachable")

    def ListEndpoints(self, request: net_pb2.ListEndpointsRequest, context: grpc.ServicerContext
                      ) -> net_pb2.ListEndpointsResponse:
        with handle(context):
            endpoints = [to_proto(e) for e in self.network.list_endpoints()]
            return net_pb2.ListEndpointsResponse(endpoints=endpoints)
        raise AssertionError("unreachable")

    def DeleteEndpoint(self, request: net_pb2.DeleteEndpointRequest, context: grpc.ServicerContext
                       ) -> net_pb2.DeleteEndpointResponse:
        with handle(context):
            self.network.delete_endpoint(request.container_id)
            return net_pb2.DeleteEndpointResponse()
        raise AssertionError("unreachable")
