"""``python -m skiff.netsvc``: serve skiff.net.v1.NetworkService.

Layout: records in ``<data-root>/network/endpoints.json``; namespaces bind-mounted
at ``<exec-root>/netns/<container_id>`` (a tmpfs under /run: they die with the
host, and so do the records' meaning — reconcile() drops them at the next boot).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from skiff.common.server import Service, add_common_arguments, setup_logging
from skiff.common.tls import TLSFiles
from skiff.net.v1 import net_pb2_grpc
from skiff.netsvc.drivers import HostDriver, NoneDriver
from skiff.netsvc.manager import EndpointManager
from skiff.netsvc.servicer import NetworkServicer
from skiff.netsvc.store import EndpointStore

log = logging.getLogger(__name__)

SERVICE_NAME = "skiff.net.v1.NetworkService"


def build_manager(data_root: Path, exec_root: Path) -> EndpointManager:
    """The manager with every driver, reconciled with the kernel."""
    manager = EndpointManager(
        [NoneDriver(exec_root / "netns"), HostDriver()],
        EndpointStore(data_root / "network" / "endpoints.json"),
    )
    manager.reconcile()
    return manager


def build_service(listen: list[str], manager: EndpointManager, tls: TLSFiles | None = None) -> Service:
    service = Service("netsvc", listen, tls)
    service.add(net_pb2_grpc.add_NetworkServiceServicer_to_server, NetworkServicer(manager), SERVICE_NAME)
    return service


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="skiff-netsvc", description=__doc__.splitlines()[0])
    add_common_arguments(parser, default_socket="unix://<exec-root>/netsvc.sock")
    args = parser.parse_args(argv)
    setup_logging("netsvc", args.log_level, args.debug)
    listen = args.listen or [f"unix://{args.exec_root}/netsvc.sock"]
    manager = build_manager(args.data_root, args.exec_root)
    build_service(listen, manager, TLSFiles(args.tlscacert, args.tlscert, args.tlskey)).run_until_signal()
    manager.close()
    return 0
