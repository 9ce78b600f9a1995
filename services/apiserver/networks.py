"""The network half of the public API: ``skiff network ...`` and ``run --network``.

The gateway keeps no network state: every call goes to netsvc, whose
NetworkService has the same calls (the public messages mirror the internal
ones field for field). Here the container references are resolved, since only
graphsvc knows names: ``container:<name>`` becomes ``container:<id>``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol

import grpc

from skiff.api.v1 import api_pb2, api_pb2_grpc
from skiff.apiserver import events
from skiff.apiserver.backends import GraphBackend
from skiff.common import errors, grpcerr
from skiff.net.v1 import net_pb2
from skiff.types.v1 import types_pb2

BUILTIN_MODES = ("bridge", "none", "host")
CONTAINER_PREFIX = "container:"


class NetworkBackend(Protocol):
    """The network calls of netsvc (NetClient.network_call)."""

    def network_call(self, method: str, request: Any) -> Any: ...


class Networks:
    def __init__(self, net: NetworkBackend, graph: GraphBackend | None = None):
        self._net = net
        self._graph = graph

    def connect(self, r: api_pb2.ConnectNetworkRequest) -> api_pb2.ConnectNetworkResponse:
        assert self._graph is not None
        c = self._graph.get_container(r.container)
        self._net.network_call("ConnectNetwork", net_pb2.ConnectNetworkRequest(
            network=r.network, container_id=c.id, container_name=c.name, aliases=r.aliases,
            ip_address=r.ip_address))
        events.network_of(self._net, r.network, "connect", container=c.id)
        return api_pb2.ConnectNetworkResponse()

    def disconnect(self, r: api_pb2.DisconnectNetworkRequest) -> api_pb2.DisconnectNetworkResponse:
        assert self._graph is not None
        c = self._graph.get_container(r.container)
        self._net.network_call("DisconnectNetwork", net_pb2.DisconnectNetworkRequest(
            network=r.network, container_id=c.id))
        events.network_of(self._net, r.network, "disconnect", container=c.id)
        return api_pb2.DisconnectNetworkResponse()

    def create(self, r: api_pb2.CreateNetworkRequest) -> api_pb2.CreateNetworkResponse:
        resp = self._net.network_call("CreateNetwork", net_pb2.CreateNetworkRequest(
            name=r.name, subnet=r.subnet, gateway=r.gateway, ip_range=r.ip_range, internal=r.internal,
            labels=r.labels, enable_ipv6=r.enable_ipv6, ipv6_subnet=r.ipv6_subnet))
        events.network(resp.network.id, "create", resp.network.name, resp.network.driver)
        return api_pb2.CreateNetworkResponse(network=resp.network)

    def list(self) -> api_pb2.ListNetworksResponse:
        resp = self._net.network_call("ListNetworks", net_pb2.ListNetworksRequest())
        return api_pb2.ListNetworksResponse(networks=resp.networks)

    def inspect(self, ref: str) -> api_pb2.InspectNetworkResponse:
        resp = self._net.network_call("InspectNetwork", net_pb2.InspectNetworkRequest(ref=ref))
        return api_pb2.InspectNetworkResponse(network=resp.network)

    def remove(self, ref: str) -> api_pb2.RemoveNetworkResponse:
        known = events.network_record(self._net, ref)
        resp = self._net.network_call("RemoveNetwork", net_pb2.RemoveNetworkRequest(ref=ref))
        events.network_removed(known, resp.id)
        return api_pb2.RemoveNetworkResponse(id=resp.id)

    def prune(self, filters: Sequence[types_pb2.Filter] = ()) -> api_pb2.PruneNetworksResponse:
        known = events.network_records(self._net)
        resp = self._net.network_call("PruneNetworks", net_pb2.PruneNetworksRequest(filters=filters))
        events.networks_pruned(known, resp.names)
        return api_pb2.PruneNetworksResponse(names=resp.names)


def normalize_mode(graph: GraphBackend, net: Any, mode: str, aliases: list[str], ip: str) -> str:
    """The network mode to store: a built-in one, ``container:<id>`` or a user network's name.

    Refuses (before anything is created) a network that does not exist, and
    ``--network-alias`` / ``--ip`` where Docker refuses them (not a user network).
    """
    if mode.startswith(CONTAINER_PREFIX):
        try:
            target = graph.get_container(mode[len(CONTAINER_PREFIX):])
        except errors.NotFound:
            raise errors.InvalidArgument(f"No such container: {mode[len(CONTAINER_PREFIX):]} (network mode {mode!r})",
                                         reason=errors.INVALID_NETWORK_MODE) from None
        resolved = CONTAINER_PREFIX + target.id
    elif mode in BUILTIN_MODES:
        resolved = mode
    else:
        if not hasattr(net, "network_call"):
            raise errors.InvalidArgument(f"network {mode} not found (network mode {mode!r})",
                                         reason=errors.INVALID_NETWORK_MODE)
        resolved = net.network_call("InspectNetwork", net_pb2.InspectNetworkRequest(ref=mode)).network.name
    user = resolved not in BUILTIN_MODES and not resolved.startswith(CONTAINER_PREFIX)
    if aliases and not user:
        raise errors.InvalidArgument("network-scoped alias is supported only for containers in user "
                                     "defined networks", reason=errors.INVALID_NETWORK_MODE)
    if ip and not user:
        raise errors.InvalidArgument("user specified IP address is supported on user defined networks only",
                                     reason=errors.INVALID_NETWORK_MODE)
    return resolved


def check_mac(mac: str, mode: str) -> str:
    """``--mac-address``, normalised; refused (before anything is created) if malformed or on a
    network mode without an interface of the container's own (host, none, container:)."""
    if not mac:
        return ""
    if mode in ("host", "none") or mode.startswith(CONTAINER_PREFIX):
        raise errors.InvalidArgument("conflicting options: mac-address and the network mode",
                                     reason=errors.INVALID_NETWORK_MODE)
    if not re.fullmatch(r"[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}", mac) or int(mac[:2], 16) & 1:
        raise errors.InvalidArgument(f"{mac} is not a valid mac address (six hex bytes, unicast)",
                                     reason="INVALID_MAC_ADDRESS")
    return mac.replace("-", ":").lower()


class NetworkServicer(api_pb2_grpc.NetworkServiceServicer):
    def __init__(self, networks: Networks):
        self._networks = networks

    def CreateNetwork(self, request: api_pb2.CreateNetworkRequest, context: grpc.ServicerContext
                      ) -> api_pb2.CreateNetworkResponse:
        with grpcerr.handle(context):
            return self._networks.create(request)
        raise AssertionError("unreachable")

    def ListNetworks(self, request: api_pb2.ListNetworksRequest, context: grpc.ServicerContext
                     ) -> api_pb2.ListNetworksResponse:
        with grpcerr.handle(context):
            return self._networks.list()
        raise AssertionError("unreachable")

    def InspectNetwork(self, request: api_pb2.InspectNetworkRequest, context: grpc.ServicerContext
                       ) -> api_pb2.InspectNetworkResponse:
        with grpcerr.handle(context):
            return self._networks.inspect(request.ref)
        raise AssertionError("unreachable")

    def RemoveNetwork(self, request: api_pb2.RemoveNetworkRequest, context: grpc.ServicerContext
                      ) -> api_pb2.RemoveNetworkResponse:
        with grpcerr.handle(context):
            return self._networks.remove(request.ref)
        raise AssertionError("unreachable")

    def PruneNetworks(self, request: api_pb2.PruneNetworksRequest, context: grpc.ServicerContext
                      ) -> api_pb2.PruneNetworksResponse:
        with grpcerr.handle(context):
            return self._networks.prune(request.filters)
        raise AssertionError("unreachable")

    def ConnectNetwork(self, request: api_pb2.ConnectNetworkRequest, context: grpc.ServicerContext
                       ) -> api_pb2.ConnectNetworkResponse:
        with grpcerr.handle(context):
            return self._networks.connect(request)
        raise AssertionError("unreachable")

    def DisconnectNetwork(self, request: api_pb2.DisconnectNetworkRequest, context: grpc.ServicerContext
                          ) -> api_pb2.DisconnectNetworkResponse:
        with grpcerr.handle(context):
            return self._networks.disconnect(request)
        raise AssertionError("unreachable")
