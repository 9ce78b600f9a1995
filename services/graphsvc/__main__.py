"""``python -m skiff.graphsvc``: the image graph and the GraphDB."""

from __future__ import annotations

import argparse
import os
import sys

from skiff.common import server
from skiff.common.errors import SkiffError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="skiff-graphsvc", description=__doc__)
    server.add_common_arguments(parser, default_socket="unix://<exec-root>/graphsvc.sock")
    parser.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]|CIDR",
                        help="a registry to reach over https without certificate checks, or plain http")
    parser.add_argument("--registry-mirror", action="append", default=[], metavar="URL",
                        help="a Docker Hub mirror, tried before the hub (repeatable)")
    args = parser.parse_args(argv)
    server.setup_logging("graphsvc", args.log_level, args.debug)

    from skiff.graph.v1 import graph_pb2_grpc
    from skiff.graphsvc import reference, registry
    from skiff.graphsvc.graph import open_graph
    from skiff.graphsvc.pull import RegistryClients
    from skiff.graphsvc.servicer import ContainerGraphServicer, ImageServicer, ImageToolServicer, VolumeServicer

    listen = args.listen or [f"unix://{args.exec_root}/graphsvc.sock"]
    try:
        options = registry.Options.parse(args.insecure_registry, args.registry_mirror)
        # SKIFF_HUB_REGISTRY: where Docker Hub names go; only the tests change it.
        clients = RegistryClients(options, os.environ.get("SKIFF_HUB_REGISTRY") or reference.DOCKER_HUB_REGISTRY)
        graph = open_graph(args.data_root)
        svc = server.Service("graphsvc", listen)
        svc.add(graph_pb2_grpc.add_ImageServiceServicer_to_server, ImageServicer(graph, clients),
                "skiff.graph.v1.ImageService")
        svc.add(graph_pb2_grpc.add_ContainerGraphServiceServicer_to_server, ContainerGraphServicer(graph),
                "skiff.graph.v1.ContainerGraphService")
        svc.add(graph_pb2_grpc.add_ImageToolServiceServicer_to_server, ImageToolServicer(graph, clients),
                "skiff.graph.v1.ImageToolService")
        if graph.volumes is not None:
            svc.add(graph_pb2_grpc.add_VolumeServiceServicer_to_server, VolumeServicer(graph.volumes),
                    "skiff.graph.v1.VolumeService")
        svc.run_until_signal()
    except SkiffError as err:
        print(f"graphsvc: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
