"""Plain data of netsvc: an endpoint is a container's place on a network."""

from __future__ import annotations

import re
from dataclasses import dataclass

from skiff.common.errors import InvalidArgument

MODE_NONE = "none"
MODE_HOST = "host"
MODE_BRIDGE = "bridge"

# The id names a file under <exec-root>/netns: keep it to a safe file name.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True)
class PortBinding:
    """A container port published on the host; ``host_ip`` empty means every address."""

    host_ip: str = ""
    host_port: int = 0
    container_port: int = 0
    protocol: str = "tcp"


@dataclass(frozen=True)
class EndpointOptions:
    """What a container asks of its endpoint beyond the mode (CreateEndpointRequest)."""

    hostname: str = ""
    port_bindings: tuple[PortBinding, ...] = ()
    #: ``80/tcp`` or ``80``; published on free host ports when ``publish_all_ports``.
    exposed_ports: tuple[str, ...] = ()
    publish_all_ports: bool = False
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    extra_hosts: tuple[str, ...] = ()
    #: On a user network: the container's name and ``--network-alias``es (DNS), and ``--ip``.
    container_name: str = ""
    aliases: tuple[str, ...] = ()
    ip_address: str = ""
    #: ``--mac-address`` for eth0 (empty: derived from the address, as Docker).
    mac_address: str = ""


@dataclass(frozen=True)
class Endpoint:
    container_id: str
    network_mode: str
    #: Network namespace to join; empty when the container shares the host's.
    netns_path: str = ""
    #: On a bridge: address, prefix length, gateway, MAC, bridge and host-side veth.
    ip_address: str = ""
    prefix_length: int = 0
    gateway: str = ""
    mac_address: str = ""
    bridge: str = ""
    veth: str = ""
    #: Published ports, with the host ports actually chosen.
    ports: tuple[PortBinding, ...] = ()
    #: The container's /etc/hosts and /etc/resolv.conf (empty: keep the image's).
    hosts: str = ""
    resolv_conf: str = ""
    #: On a user network: the names its embedded DNS answers with ``ip_address``.
    aliases: tuple[str, ...] = ()
    #: On an IPv6 network (``--ipv6``): the container's IPv6 address, prefix length and gateway.
    ipv6_address: str = ""
    ipv6_prefix_length: int = 0
    ipv6_gateway: str = ""
    #: On a user network: ``--dns`` servers, where its embedded DNS forwards (empty: the host's).
    dns_servers: tuple[str, ...] = ()


_MAC = re.compile(r"[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}")


def parse_mac(text: str) -> str:
    """``--mac-address``: six hex bytes, unicast; normalised to ``aa:bb:cc:dd:ee:ff``."""
    if not _MAC.fullmatch(text):
        raise InvalidArgument(f"invalid MAC address {text!r}: want six hex bytes, like 02:42:ac:11:00:02",
                              reason="INVALID_MAC_ADDRESS")
    mac = text.replace("-", ":").lower()
    if int(mac[:2], 16) & 1:
        raise InvalidArgument(f"invalid MAC address {text!r}: a multicast address", reason="INVALID_MAC_ADDRESS")
    return mac


def validate_container_id(container_id: str) -> None:
    if not _ID.fullmatch(container_id):
        raise InvalidArgument(
            f"invalid container id {container_id!r}: use 1-128 of [A-Za-z0-9_.-], starting alphanumeric",
            reason="INVALID_CONTAINER_ID",
        )
