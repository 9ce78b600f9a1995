"""``skiff network create|ls|inspect|rm|prune``: user-defined networks, as Docker's commands."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from skiff.cli import exits
from skiff.cli import format as fmt
from skiff.cli.args import Parser, add_command, split_kv

if TYPE_CHECKING:
    from skiff.cli.client import Client
    from skiff.types.v1 import types_pb2


def _stub(client: Client) -> Any:
    from skiff.api.v1 import api_pb2_grpc

    return api_pb2_grpc.NetworkServiceStub(client.channel)


def register(sub: argparse._SubParsersAction) -> None:
    net = add_command(sub, "network", cmd_help, "Manage networks", usage="skiff network COMMAND")
    nsub = net.add_subparsers(dest="network_command", metavar="COMMAND", parser_class=Parser)

    p = add_command(nsub, "create", cmd_create, "Create a network", usage="skiff network create [OPTIONS] NETWORK")
    p.add_argument("-d", "--driver", default="bridge", help="driver to manage the network (bridge only)")
    p.add_argument("--subnet", action="append", default=[],
                   help="subnet in CIDR format that represents a network segment (one IPv4, one IPv6 with --ipv6)")
    p.add_argument("--ipv6", action="store_true", help="enable IPv6 networking (needs an IPv6 --subnet)")
    p.add_argument("--gateway", default="", help="IPv4 gateway for the master subnet")
    p.add_argument("--ip-range", default="", help="allocate container ip from a sub-range")
    p.add_argument("--internal", action="store_true", help="restrict external access to the network")
    p.add_argument("--label", action="append", default=[], help="set metadata on a network")
    p.add_argument("name", metavar="NETWORK")
    p.set_defaults(prog="skiff network create")

    p = add_command(nsub, "ls", cmd_ls, "List networks")
    p.add_argument("-q", "--quiet", action="store_true", help="only display network IDs")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate the output")
    p.add_argument("--format", default="", help="format output using a custom template: 'table', "
                   "'table TEMPLATE', 'json', or a Go template (fields: ID, Name, Driver, Scope, IPv6, "
                   "Internal, Labels, CreatedAt)")
    p.set_defaults(prog="skiff network ls")

    p = add_command(nsub, "inspect", cmd_inspect, "Display detailed information on one or more networks")
    p.add_argument("networks", nargs="+", metavar="NETWORK")
    p.set_defaults(prog="skiff network inspect")

    p = add_command(nsub, "rm", cmd_rm, "Remove one or more networks")
    p.add_argument("networks", nargs="+", metavar="NETWORK")
    p.set_defaults(prog="skiff network rm")

    p = add_command(nsub, "connect", cmd_connect, "Connect a container to a network",
                    usage="skiff network connect [OPTIONS] NETWORK CONTAINER")
    p.add_argument("--alias", action="append", default=[], help="add network-scoped alias for the container")
    p.add_argument("--ip", default="", help="IPv4 address (e.g., 172.30.100.104)")
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(prog="skiff network connect")

    p = add_command(nsub, "disconnect", cmd_disconnect, "Disconnect a container from a network",
                    usage="skiff network disconnect [OPTIONS] NETWORK CONTAINER")
    p.add_argument("-f", "--force", action="store_true", help="force the container to disconnect from a network")
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(prog="skiff network disconnect")

    p = add_command(nsub, "prune", cmd_prune, "Remove all unused networks")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    p.add_argument("--filter", action="append", default=[],
                   help="provide filter values (e.g. 'until=<timestamp>', 'label=<key>[=<value>]', 'label!=...')")
    p.set_defaults(prog="skiff network prune")


def cmd_help(client: Client, args: argparse.Namespace) -> int:
    args.parser.print_help()
    return 0


def cmd_create(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2

    if args.driver != "bridge":
        raise exits.CLIError(f"Error response from daemon: plugin {args.driver!r} not found")
    labels = dict(split_kv(args.label, "label"))
    v4 = [s for s in args.subnet if ":" not in s]
    v6 = [s for s in args.subnet if ":" in s]
    if len(v4) > 1 or len(v6) > 1:
        raise exits.Usage("at most one IPv4 and one IPv6 --subnet")
    with client.translated():
        resp = _stub(client).CreateNetwork(api_pb2.CreateNetworkRequest(
            name=args.name, subnet=v4[0] if v4 else "", gateway=args.gateway, ip_range=args.ip_range,
            internal=args.internal, labels=labels, enable_ipv6=args.ipv6, ipv6_subnet=v6[0] if v6 else ""))
    print(resp.network.id)
    return 0


#: ``network ls --format`` fields and their column names (Docker's)
NETWORK_HEADERS = {"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE", "IPv6": "IPV6",
                   "Internal": "INTERNAL", "Labels": "LABELS", "CreatedAt": "CREATED AT"}
NETWORK_TABLE = "{{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}"


def cmd_ls(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2

    with client.translated():
        nets = _stub(client).ListNetworks(api_pb2.ListNetworksRequest()).networks
    ids = [n.id if args.no_trunc else fmt.short_id(n.id) for n in nets]
    if args.quiet:
        for i in ids:
            print(i)
        return 0
    if args.format:
        from skiff.cli import listformat

        items = [{"CreatedAt": listformat.created_at(n.created.seconds), "Driver": n.driver, "ID": i,
                  "IPv6": str(n.enable_ipv6).lower(), "Internal": str(n.internal).lower(),
                  "Labels": listformat.labels_text(n.labels), "Name": n.name, "Scope": n.scope or "local"}
                 for i, n in zip(ids, nets, strict=True)]
        sys.stdout.write(listformat.format_list(args.format, NETWORK_TABLE, items, NETWORK_HEADERS))
        return 0
    rows = [[i, n.name, n.driver, n.scope or "local"] for i, n in zip(ids, nets, strict=True)]
    sys.stdout.write(fmt.table(["NETWORK ID", "NAME", "DRIVER", "SCOPE"], rows))
    return 0


def network_json(n: types_pb2.Network) -> dict[str, Any]:
    """Docker's ``network inspect`` shape."""
    created = fmt.rfc3339nano(n.created.seconds, n.created.nanos) if n.created.seconds else ""
    config = []
    if n.subnet:
        entry = {"Subnet": n.subnet, "Gateway": n.gateway}
        if n.ip_range:
            entry["IPRange"] = n.ip_range
        config.append(entry)
    if n.ipv6_subnet:
        config.append({"Subnet": n.ipv6_subnet, "Gateway": n.ipv6_gateway})
    return {
        "Name": n.name,
        "Id": n.id,
        "Created": created,
        "Scope": n.scope or "local",
        "Driver": n.driver,
        "EnableIPv6": n.enable_ipv6,
        "IPAM": {"Driver": "default", "Options": {}, "Config": config},
        "Internal": n.internal,
        "Attachable": False,
        "Containers": {
            c.container_id: {"Name": c.name, "MacAddress": c.mac_address, "IPv4Address": c.ipv4_address,
                             "IPv6Address": c.ipv6_address, "Aliases": list(c.aliases)}
            for c in n.containers
        },
        "Options": {"com.docker.network.bridge.name": n.bridge} if n.bridge else {},
        "Labels": dict(n.labels),
    }


def cmd_inspect(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2
    from skiff.common.errors import NotFound

    out, status = [], 0
    for ref in args.networks:
        try:
            with client.translated():
                out.append(network_json(_stub(client).InspectNetwork(
                    api_pb2.InspectNetworkRequest(ref=ref)).network))
        except NotFound as err:
            print(f"Error response from daemon: {err.message}", file=sys.stderr)
            status = 1
    print(json.dumps(out, indent=4))
    return status


def cmd_rm(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2
    from skiff.common.errors import SkiffError

    status = 0
    for ref in args.networks:
        try:
            with client.translated():
                _stub(client).RemoveNetwork(api_pb2.RemoveNetworkRequest(ref=ref))
            print(ref)
        except SkiffError as err:
            print(f"Error response from daemon: {err.message}", file=sys.stderr)
            status = 1
    return status


def cmd_connect(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2

    with client.translated():
        _stub(client).ConnectNetwork(api_pb2.ConnectNetworkRequest(
            network=args.network, container=args.container, aliases=args.alias, ip_address=args.ip))
    return 0


def cmd_disconnect(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2

    with client.translated():
        _stub(client).DisconnectNetwork(api_pb2.DisconnectNetworkRequest(
            network=args.network, container=args.container, force=args.force))
    return 0


def cmd_prune(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2
    from skiff.cli.imagetools import prune_filters

    if not args.force:
        print("WARNING! This will remove all custom networks not used by at least one container.")
        answer = input("Are you sure you want to continue? [y/N] ") if sys.stdin.isatty() else ""
        if answer.strip().lower() not in ("y", "yes"):
            return 0
    with client.translated():
        names = _stub(client).PruneNetworks(api_pb2.PruneNetworksRequest(filters=prune_filters(args.filter))).names
    if names:
        print("Deleted Networks:")
        for name in names:
            print(name)
    return 0
