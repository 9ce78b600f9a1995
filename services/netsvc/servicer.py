"""gRPC adapter for skiff.net.v1.NetworkService: protos in, domain calls, protos out."""

from __future__ import annotations

import grpc

from skiff.common import itemerr, prunefilter
from skiff.common.errors import FailedPrecondition
from skiff.common.grpcerr import handle
from skiff.net.v1 import net_pb2, net_pb2_grpc
from skiff.netsvc.manager import Network
from skiff.netsvc.model import Endpoint, EndpointOptions, PortBinding
from skiff.netsvc.networks import NetworkInfo, Networks
from skiff.types.v1 import types_pb2


def port_to_proto(p: PortBinding) -> types_pb2.PortBinding:
    return types_pb2.PortBinding(host_ip=p.host_ip, host_port=p.host_port, container_port=p.container_port,
                                 protocol=p.protocol)


def port_from_proto(p: types_pb2.PortBinding) -> PortBinding:
    return PortBinding(p.host_ip, p.host_port, p.container_port, p.protocol or "tcp")


def to_proto(e: Endpoint) -> net_pb2.Endpoint:
    return net_pb2.Endpoint(
        container_id=e.container_id, network_mode=e.network_mode, netns_path=e.netns_path,
        ip_address=e.ip_address, prefix_length=e.prefix_length, gateway=e.gateway, mac_address=e.mac_address,
        bridge=e.bridge, ports=[port_to_proto(p) for p in e.ports], hosts=e.hosts, resolv_conf=e.resolv_conf,
        aliases=e.aliases, ipv6_address=e.ipv6_address, ipv6_prefix_length=e.ipv6_prefix_length,
        ipv6_gateway=e.ipv6_gateway,
    )


def from_proto(e: net_pb2.Endpoint) -> Endpoint:
    return Endpoint(
        e.container_id, e.network_mode, e.netns_path, ip_address=e.ip_address, prefix_length=e.prefix_length,
        gateway=e.gateway, mac_address=e.mac_address, bridge=e.bridge,
        ports=tuple(port_from_proto(p) for p in e.ports), hosts=e.hosts, resolv_conf=e.resolv_conf,
        aliases=tuple(e.aliases), ipv6_address=e.ipv6_address, ipv6_prefix_length=e.ipv6_prefix_length,
        ipv6_gateway=e.ipv6_gateway,
    )


def options_from_request(r: net_pb2.CreateEndpointRequest) -> EndpointOptions:
    return EndpointOptions(
        hostname=r.hostname, port_bindings=tuple(port_from_proto(p) for p in r.port_bindings),
        exposed_ports=tuple(r.exposed_ports), publish_all_ports=r.publish_all_ports, dns=tuple(r.dns),
        dns_search=tuple(r.dns_search), dns_options=tuple(r.dns_options), extra_hosts=tuple(r.extra_hosts),
        container_name=r.container_name, aliases=tuple(r.aliases), ip_address=r.ip_address,
        mac_address=r.mac_address,
    )


def options_to_request(container_id: str, network_mode: str, o: EndpointOptions) -> net_pb2.CreateEndpointRequest:
    return net_pb2.CreateEndpointRequest(
        container_id=container_id, network_mode=network_mode, hostname=o.hostname,
        port_bindings=[port_to_proto(p) for p in o.port_bindings], exposed_ports=o.exposed_ports,
        publish_all_ports=o.publish_all_ports, dns=o.dns, dns_search=o.dns_search, dns_options=o.dns_options,
        extra_hosts=o.extra_hosts, container_name=o.container_name, aliases=o.aliases, ip_address=o.ip_address,
        mac_address=o.mac_address,
    )


def network_to_proto(info: NetworkInfo) -> types_pb2.Network:
    r = info.record
    n = types_pb2.Network(id=r.id, name=r.name, driver=r.driver, subnet=r.subnet, gateway=r.gateway,
                          ip_range=r.ip_range, internal=r.internal, labels=r.labels, bridge=info.bridge,
                          scope="local", enable_ipv6=bool(r.ipv6_subnet), ipv6_subnet=r.ipv6_subnet,
                          ipv6_gateway=r.ipv6_gateway)
    if r.created:
        n.created.FromNanoseconds(int(r.created * 1e9))
    for e in info.endpoints:
        n.containers.add(container_id=e.container_id, name=e.aliases[0] if e.aliases else "",
                         ipv4_address=f"{e.ip_address}/{e.prefix_length}" if e.ip_address else "",
                         mac_address=e.mac_address, aliases=e.aliases,
                         ipv6_address=f"{e.ipv6_address}/{e.ipv6_prefix_length}" if e.ipv6_address else "")
    return n


class NetworkServicer(net_pb2_grpc.NetworkServiceServicer):
    def __init__(self, network: Network, networks: Networks | None = None):
        self.network = network
        self.networks = networks

    def _nets(self) -> Networks:
        if self.networks is None:
            raise FailedPrecondition("user-defined networks are not enabled in this netsvc")
        return self.networks

    def CreateNetwork(self, request: net_pb2.CreateNetworkRequest, context: grpc.ServicerContext
                      ) -> net_pb2.CreateNetworkResponse:
        with handle(context):
            info = self._nets().create(request.name, request.subnet, request.gateway, request.ip_range,
                                       request.internal, dict(request.labels), request.enable_ipv6,
                                       request.ipv6_subnet)
            return net_pb2.CreateNetworkResponse(network=network_to_proto(info))
        raise AssertionError("unreachable")

    def ListNetworks(self, request: net_pb2.ListNetworksRequest, context: grpc.ServicerContext
                     ) -> net_pb2.ListNetworksResponse:
        with handle(context):
            return net_pb2.ListNetworksResponse(networks=[network_to_proto(i) for i in self._nets().list_networks()])
        raise AssertionError("unreachable")

    def InspectNetwork(self, request: net_pb2.InspectNetworkRequest, context: grpc.ServicerContext
                       ) -> net_pb2.InspectNetworkResponse:
        with handle(context):
            return net_pb2.InspectNetworkResponse(network=network_to_proto(self._nets().inspect(request.ref)))
        raise AssertionError("unreachable")

    def RemoveNetwork(self, request: net_pb2.RemoveNetworkRequest, context: grpc.ServicerContext
                      ) -> net_pb2.RemoveNetworkResponse:
        with handle(context):
            return net_pb2.RemoveNetworkResponse(id=self._nets().remove(request.ref))
        raise AssertionError("unreachable")

    def PruneNetworks(self, request: net_pb2.PruneNetworksRequest, context: grpc.ServicerContext
                      ) -> net_pb2.PruneNetworksResponse:
        with handle(context):
            keep = prunefilter.parse((f.key, f.value) for f in request.filters)
            return net_pb2.PruneNetworksResponse(names=self._nets().prune(keep))
        raise AssertionError("unreachable")

    def ConnectNetwork(self, request: net_pb2.ConnectNetworkRequest, context: grpc.ServicerContext
                       ) -> net_pb2.ConnectNetworkResponse:
        with handle(context):
            opts = EndpointOptions(container_name=request.container_name, aliases=tuple(request.aliases),
                                   ip_address=request.ip_address)
            e = self._nets().connect(request.network, request.container_id, opts)
            return net_pb2.ConnectNetworkResponse(endpoint=to_proto(e))
        raise AssertionError("unreachable")

    def DisconnectNetwork(self, request: net_pb2.DisconnectNetworkRequest, context: grpc.ServicerContext
                          ) -> net_pb2.DisconnectNetworkResponse:
        with handle(context):
            self._nets().disconnect(request.network, request.container_id)
            return net_pb2.DisconnectNetworkResponse()
        raise AssertionError("unreachable")

    def CreateEndpoint(self, request: net_pb2.CreateEndpointRequest, context: grpc.ServicerContext
                       ) -> net_pb2.CreateEndpointResponse:
        with handle(context):
            e = self.network.create_endpoint(request.container_id, request.network_mode,
                                             options_from_request(request))
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
            self.network.delete_endpoint(request.container_id, request.release)
            return net_pb2.DeleteEndpointResponse()
        raise AssertionError("unreachable")

    def DeleteEndpoints(self, request: net_pb2.DeleteEndpointsRequest, context: grpc.ServicerContext
                        ) -> net_pb2.DeleteEndpointsResponse:
        with handle(context):
            out = []
            for cid, err in self.network.delete_endpoints(list(request.container_ids)).items():
                code, message, reason = itemerr.fields(err)
                out.append(net_pb2.EndpointFailure(container_id=cid, code=code, message=message, reason=reason))
            return net_pb2.DeleteEndpointsResponse(failed=out)
        raise AssertionError("unreachable")
