"""Wiring: backends from addresses, domain objects, servicers, one Service.

``build`` is separate from ``main`` so tests can serve the real servicers over
fake backends on a socket in a temporary directory.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from skiff.api.v1 import api_pb2, api_pb2_grpc
from skiff.apiserver import events, logopts
from skiff.apiserver.backends import ExecBackend, ExecClient, GraphBackend, GraphClient, NetBackend, NetClient
from skiff.apiserver.containers import Containers
from skiff.apiserver.images import Images
from skiff.apiserver.imagetools import ImageToolServicer, NoTools, ToolsBackend, ToolsClient
from skiff.apiserver.networks import Networks, NetworkServicer
from skiff.apiserver.servicers import ContainerServicer, ImageServicer, SystemServicer
from skiff.apiserver.system import System
from skiff.apiserver.volumes import NoVolumes, VolumesBackend, VolumesClient, VolumeServicer
from skiff.common import errors, trace
from skiff.common.address import DEFAULT_HOST
from skiff.common.server import Service, add_common_arguments, channel, setup_logging
from skiff.common.tls import TLSFiles
from skiff.types.v1 import types_pb2

log = logging.getLogger(__name__)
NAME = "apiserver"
#: Full names of the public services, as reflection lists them.
PUBLIC_SERVICES = tuple(s.full_name for s in api_pb2.DESCRIPTOR.services_by_name.values())


@dataclass
class Gateway:
    service: Service
    containers: Containers


def build(
    listen: Sequence[str],
    graph: GraphBackend,
    exec_: ExecBackend,
    net: NetBackend,
    *,
    tls: TLSFiles | None = None,
    data_root: str = "",
    exec_root: str = "",
    containers: Containers | None = None,
    tools: ToolsBackend | None = None,
    volumes: VolumesBackend | None = None,
) -> Gateway:
    containers = containers or Containers(graph, exec_, net)
    events.HUB.bind(graph, exec_, net)
    traces = trace.Store(NAME)
    service = Service(NAME, listen, tls, traces=traces)
    svc = api_pb2.DESCRIPTOR.services_by_name
    service.add(api_pb2_grpc.add_SystemServiceServicer_to_server,
                SystemServicer(System(graph, exec_, data_root, exec_root, traces)), svc["SystemService"].full_name)
    service.add(api_pb2_grpc.add_ImageServiceServicer_to_server,
                ImageServicer(Images(graph)), svc["ImageService"].full_name)
    service.add(api_pb2_grpc.add_ContainerServiceServicer_to_server,
                ContainerServicer(containers), svc["ContainerService"].full_name)
    service.add(api_pb2_grpc.add_NetworkServiceServicer_to_server,
                NetworkServicer(Networks(net, graph)), svc["NetworkService"].full_name)  # type: ignore[arg-type]
    service.add(api_pb2_grpc.add_ImageToolServiceServicer_to_server,
                ImageToolServicer(tools or NoTools(), graph, exec_),  # type: ignore[arg-type]
                svc["ImageToolService"].full_name)
    service.add(api_pb2_grpc.add_VolumeServiceServicer_to_server,
                VolumeServicer(volumes or NoVolumes()), svc["VolumeService"].full_name)
    return Gateway(service, containers)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="skiff-apiserver", description="skiff's public API gateway")
    add_common_arguments(parser, default_socket=DEFAULT_HOST)
    for svc in ("graphsvc", "execsvc", "netsvc"):
        parser.add_argument(f"--{svc}", metavar="ADDRESS",
                            help=f"address of {svc} (default unix://<exec-root>/{svc}.sock)")
    parser.add_argument("--log-driver", default="", help="default log driver of new containers (json-file)")
    parser.add_argument("--log-opt", action="append", default=[], metavar="KEY=VALUE",
                        help="default log driver options of new containers")
    parser.add_argument("--daemon-id", default="",
                        help="this daemon instance (skiffd passes a new one at each start; default: the boot id);"
                             " an `always` container stopped by the user comes back under a new one")
    return parser.parse_args(argv)


def daemon_id(given: str) -> str:
    if given:
        return given
    try:
        return "boot-" + Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "boot-unknown"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(NAME, args.log_level, args.debug)
    exec_root = Path(args.exec_root)
    tls = TLSFiles(args.tlscacert, args.tlscert, args.tlskey)

    def target(svc: str) -> str:
        return getattr(args, svc) or f"unix://{exec_root / (svc + '.sock')}"

    try:
        graph_channel = channel(target("graphsvc"), tls, internal=True)
        graph, exec_ = GraphClient(graph_channel), ExecClient(channel(target("execsvc"), tls, internal=True))
        net = NetClient(channel(target("netsvc"), tls, internal=True))
        gateway = build(
            args.listen or [DEFAULT_HOST],
            graph,
            exec_,
            net,
            tls=tls,
            data_root=str(args.data_root),
            exec_root=str(exec_root),
            tools=ToolsClient(graph_channel),
            volumes=VolumesClient(graph_channel),
            containers=Containers(graph, exec_, net, daemon_id=daemon_id(args.daemon_id)),
        )
        gateway.containers.log_defaults = logopts.resolve(types_pb2.LogConfig(
            type=args.log_driver, config=logopts.parse_opts(args.log_opt)))
        gateway.containers.sweep_in_background()
        events.HUB.watch_exits_in_background()
        gateway.service.on_stop.append(events.HUB.close)  # live Events streams end at once
        gateway.service.run_until_signal()
    except (errors.SkiffError, OSError, RuntimeError) as err:
        # RuntimeError: grpc's "Failed to bind" when an address is taken.
        print(f"skiff-apiserver: error: {err}", file=sys.stderr)
        return 1
    finally:
        events.HUB.close()
        if "gateway" in locals():
            gateway.containers.close()
    return 0
