"""``skiff volume create|ls|inspect|rm|prune``: volumes, as Docker's commands."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from skiff.cli import format as fmt
from skiff.cli.args import Parser, add_command, split_kv

if TYPE_CHECKING:
    from skiff.cli.client import Client
    from skiff.types.v1 import types_pb2


def _stub(client: Client) -> Any:
    from skiff.api.v1 import api_pb2_grpc

    return api_pb2_grpc.VolumeServiceStub(client.channel)


def register(sub: argparse._SubParsersAction) -> None:
    vol = add_command(sub, "volume", cmd_help, "Manage volumes", usage="skiff volume COMMAND")
    vsub = vol.add_subparsers(dest="volume_command", metavar="COMMAND", parser_class=Parser)

    p = add_command(vsub, "create", cmd_create, "Create a volume", usage="skiff volume create [OPTIONS] [VOLUME]")
    p.add_argument("-d", "--driver", default="local", help='specify volume driver name (default "local")')
    p.add_argument("--label", action="append", default=[], help="set metadata for a volume")
    p.add_argument("-o", "--opt", action="append", default=[], help="set driver specific options")
    p.add_argument("--name", dest="name_flag", default="", help="specify volume name")
    p.add_argument("name", nargs="?", default="", metavar="VOLUME")
    p.set_defaults(prog="skiff volume create")

    p = add_command(vsub, "ls", cmd_ls, "List volumes")
    p.add_argument("-q", "--quiet", action="store_true", help="only display volume names")
    p.add_argument("-f", "--filter", action="append", default=[],
                   help="provide filter values (e.g. 'dangling=true', 'name=x', 'label=k[=v]')")
    p.add_argument("--format", default="", help="format output using a custom template: 'table', "
                   "'table TEMPLATE', 'json', or a Go template (fields: Name, Driver, Scope, Mountpoint, "
                   "Labels, Links, Size)")
    p.set_defaults(prog="skiff volume ls")

    p = add_command(vsub, "inspect", cmd_inspect, "Display detailed information on one or more volumes")
    p.add_argument("-f", "--format", default="", help="format the output using a Go template subset")
    p.add_argument("volumes", nargs="+", metavar="VOLUME")
    p.set_defaults(prog="skiff volume inspect")

    p = add_command(vsub, "rm", cmd_rm, "Remove one or more volumes")
    p.add_argument("-f", "--force", action="store_true", help="force the removal of one or more volumes")
    p.add_argument("volumes", nargs="+", metavar="VOLUME")
    p.set_defaults(prog="skiff volume rm")

    p = add_command(vsub, "prune", cmd_prune, "Remove unused local volumes")
    p.add_argument("-a", "--all", action="store_true", help="remove all unused volumes, not just anonymous ones")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    p.add_argument("--filter", action="append", default=[],
                   help="provide filter values (e.g. 'label=<key>[=<value>]', 'label!=...', 'all=true')")
    p.set_defaults(prog="skiff volume prune")


def cmd_help(client: Client, args: argparse.Namespace) -> int:
    args.parser.print_help()
    return 0


def _filters(items: list[str]) -> list[types_pb2.Filter]:
    from skiff.types.v1 import types_pb2

    return [types_pb2.Filter(key=k, value=v) for k, v in split_kv(items, "filter")]


def cmd_create(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2
    from skiff.cli import exits

    if args.name and args.name_flag and args.name != args.name_flag:
        raise exits.Usage('conflicting options: either specify --name or provide positional arg, not both')
    req = api_pb2.CreateVolumeRequest(name=args.name or args.name_flag, driver=args.driver,
                                      labels=dict(split_kv(args.label, "label")),
                                      driver_opts=dict(split_kv(args.opt, "opt")))
    with client.translated():
        vol = _stub(client).CreateVolume(req, timeout=60).volume
    print(vol.name)
    return 0


#: ``volume ls --format`` fields and their column names (Docker's)
VOLUME_HEADERS = {"Name": "VOLUME NAME", "Driver": "DRIVER", "Scope": "SCOPE", "Mountpoint": "MOUNTPOINT",
                  "Labels": "LABELS", "Links": "LINKS", "Size": "SIZE"}
VOLUME_TABLE = "{{.Driver}}\t{{.Name}}"


def cmd_ls(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2

    with client.translated():
        vols = _stub(client).ListVolumes(api_pb2.ListVolumesRequest(filters=_filters(args.filter)),
                                         timeout=60).volumes
    if args.quiet:
        for v in vols:
            print(v.name)
        return 0
    if args.format:
        from skiff.cli import listformat

        items = [{"Driver": v.driver, "Labels": listformat.labels_text(v.labels), "Links": "N/A",
                  "Mountpoint": v.mountpoint, "Name": v.name, "Scope": v.scope or "local", "Size": "N/A"}
                 for v in vols]
        sys.stdout.write(listformat.format_list(args.format, VOLUME_TABLE, items, VOLUME_HEADERS))
        return 0
    sys.stdout.write(fmt.table(["DRIVER", "VOLUME NAME"], [[v.driver, v.name] for v in vols]))
    return 0


def volume_json(v: types_pb2.Volume) -> dict[str, Any]:
    """Docker's ``volume inspect`` shape."""
    return {
        "CreatedAt": fmt.rfc3339nano(v.created.seconds, v.created.nanos).split(".")[0] + "Z"
        if v.created.seconds else "",
        "Driver": v.driver,
        "Labels": dict(sorted(v.labels.items())) or None,
        "Mountpoint": v.mountpoint,
        "Name": v.name,
        "Options": dict(v.options) or None,
        "Scope": v.scope or "local",
    }


def cmd_inspect(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2
    from skiff.cli import inspect
    from skiff.common.errors import SkiffError

    out, status = [], 0
    for name in args.volumes:
        try:
            with client.translated():
                v = _stub(client).InspectVolume(api_pb2.InspectVolumeRequest(name=name), timeout=60).volume
            out.append(volume_json(v))
        except SkiffError as err:
            print(f"Error response from daemon: {err.message}", file=sys.stderr)
            status = 1
    if args.format:
        for item in out:
            print(inspect.render(args.format, item))
    elif out or status == 0:
        print(json.dumps(out, indent=4))
    return status


def cmd_rm(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2
    from skiff.common.errors import SkiffError

    status = 0
    for name in args.volumes:
        try:
            with client.translated():
                _stub(client).RemoveVolume(api_pb2.RemoveVolumeRequest(name=name, force=args.force), timeout=60)
            print(name)
        except SkiffError as err:
            print(f"Error response from daemon: {err.message}", file=sys.stderr)
            status = 1
    return status


def cmd_prune(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2

    if not args.force:
        what = "all volumes not used by at least one container" if args.all else \
            "all anonymous local volumes not used by at least one container"
        print(f"WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ", end="", flush=True)
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    with client.translated():
        resp = _stub(client).PruneVolumes(api_pb2.PruneVolumesRequest(all=args.all, filters=_filters(args.filter)),
                                          timeout=300)
    if resp.names:
        print("Deleted Volumes:")
        for n in resp.names:
            print(n)
        print()
    print(f"Total reclaimed space: {fmt.human_size(resp.space_reclaimed)}")
    return 0
