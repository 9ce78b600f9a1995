"""``python -m skiff.netsvc``: serve skiff.net.v1.NetworkService.

Layout: records in ``<data-root>/network/endpoints.json``, the bridge's subnet and
addresses in ``<data-root>/network/ipam.json``; namespaces bind-mounted
at ``<exec-root>/netns/<container_id>`` (a tmpfs under /run: they die with the
host, and so do the records' meaning — reconcile() drops them at the next boot).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from ipaddress import IPv4Network
from pathlib import Path

from skiff.common.server import Service, add_common_arguments, setup_logging
from skiff.common.tls import TLSFiles
from skiff.net.v1 import net_pb2_grpc
from skiff.netsvc import netns
from skiff.netsvc.bridge import DEFAULT_BRIDGE, BridgeDriver
from skiff.netsvc.dns import DnsServer, host_upstreams
from skiff.netsvc.drivers import HostDriver, JoinDriver, NoneDriver
from skiff.netsvc.etcfiles import read_host_resolv
from skiff.netsvc.ipam import parse_bip
from skiff.netsvc.manager import EndpointManager
from skiff.netsvc.networks import Networks
from skiff.netsvc.servicer import NetworkServicer
from skiff.netsvc.store import EndpointStore

log = logging.getLogger(__name__)

SERVICE_NAME = "skiff.net.v1.NetworkService"


def build_manager(data_root: Path, exec_root: Path, bip: IPv4Network | None = None,
                  bridge: str = DEFAULT_BRIDGE, chain_prefix: str = "SKIFF",
                  dns: DnsServer | None = None, netns_pool: int = 0) -> EndpointManager:
    """The manager with every driver (user networks' too), reconciled with the kernel.

    ``netns_pool``: how many namespaces to keep made ahead of time (0: none); the pool
    starts filling once the manager is reconciled, and ``manager.close()`` empties it.
    """
    pool = netns.Pool(netns_pool)
    default_bridge = BridgeDriver(exec_root / "netns", data_root / "network", bridge, bip, chain_prefix)
    default_bridge.pool = pool
    manager = EndpointManager(
        [NoneDriver(exec_root / "netns", pool), HostDriver(), JoinDriver(), default_bridge],
        EndpointStore(data_root / "network" / "endpoints.json"),
    )
    manager.pool = pool
    manager.networks = Networks(manager, exec_root / "netns", data_root / "network", dns)
    manager.reconcile()
    pool.start()  # after reconcile(): the bridge's sysctls are set by then
    return manager


#: The default of ``--netns-pool``: a few, for the starts of a burst or a script (each is ~100 KB
#: of kernel memory and two descriptors; a start that finds the pool empty makes a fresh one).
DEFAULT_NETNS_POOL = 4


def pool_size(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid pool size {text!r}: want a whole number, 0 for none") from None
    if not 0 <= n <= 256:
        raise argparse.ArgumentTypeError(f"invalid pool size {n}: want 0-256")
    return n


def upstream_resolvers() -> list[tuple[str, int]]:
    """The embedded DNS's upstreams: the host's (systemd-resolved's real ones behind its stub)."""
    return host_upstreams(read_host_resolv())


def chain_prefix(bridge: str) -> str:
    """``SKIFF`` for the default bridge, ``SKIFF-<BRIDGE>`` for another (iptables allows 28 characters)."""
    return "SKIFF" if bridge == DEFAULT_BRIDGE else f"SKIFF-{bridge.upper()}"


def bridge_name(text: str) -> str:
    """An interface name short enough for its chains (``SKIFF-<NAME>-POSTROUTING`` <= 28 characters)."""
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,9}", text):
        raise argparse.ArgumentTypeError(f"invalid bridge name {text!r}: 1-10 of [A-Za-z0-9_.-]")
    return text


def build_service(listen: list[str], manager: EndpointManager, tls: TLSFiles | None = None) -> Service:
    service = Service("netsvc", listen, tls)
    service.add(net_pb2_grpc.add_NetworkServiceServicer_to_server, NetworkServicer(manager, manager.networks),
                SERVICE_NAME)
    return service


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="skiff-netsvc", description=__doc__.splitlines()[0])
    add_common_arguments(parser, default_socket="unix://<exec-root>/netsvc.sock")
    parser.add_argument("--bip", type=parse_bip, default=None, metavar="CIDR",
                        help="the bridge's subnet (default: the first free one of 172.18-31.0.0/16, ...)")
    parser.add_argument("--bridge", type=bridge_name, default=os.environ.get("SKIFF_BRIDGE") or DEFAULT_BRIDGE,
                        metavar="NAME",
                        help="the bridge's name (default: $SKIFF_BRIDGE or skiff0; its chains are then "
                             "SKIFF-<NAME>*, so that two engines on one host do not share rules)")
    parser.add_argument("--netns-pool", type=pool_size, metavar="N",
                        default=os.environ.get("SKIFF_NETNS_POOL") or str(DEFAULT_NETNS_POOL),
                        help="network namespaces kept made ahead of time, for faster container starts "
                             f"(default: $SKIFF_NETNS_POOL or {DEFAULT_NETNS_POOL}; 0: none)")
    args = parser.parse_args(argv)
    setup_logging("netsvc", args.log_level, args.debug)
    listen = args.listen or [f"unix://{args.exec_root}/netsvc.sock"]
    dns = DnsServer(upstream_resolvers)
    manager = build_manager(args.data_root, args.exec_root, args.bip, args.bridge, chain_prefix(args.bridge), dns,
                            args.netns_pool)
    build_service(listen, manager, TLSFiles(args.tlscacert, args.tlscert, args.tlskey)).run_until_signal()
    manager.close()
    dns.close()
    return 0
