"""``container`` (Docker's management command), ``container prune`` and ``system prune``.

``skiff container ls``, ``skiff image rm``, ``skiff system info`` ... are the top-level
commands under Docker's management names: :func:`management_argv` rewrites them
before parsing, so each has one implementation.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from skiff.cli import exits
from skiff.cli import format as fmt
from skiff.cli.args import Parser, add_command, split_kv

if TYPE_CHECKING:
    from skiff.cli.client import Client

#: ``<group> <sub>`` -> the top-level command line it stands for
ALIASES: dict[str, dict[str, list[str]]] = {
    "container": {
        **{c: [c] for c in ("attach", "commit", "cp", "create", "diff", "exec", "export", "kill", "logs", "pause",
                            "port", "rename", "restart", "rm", "run", "start", "stats", "stop", "top", "unpause",
                            "update", "wait", "ps")},
        "ls": ["ps"], "list": ["ps"], "remove": ["rm"], "inspect": ["inspect", "--type", "container"],
    },
    "image": {
        **{c: [c] for c in ("import", "load", "pull", "push", "save", "tag")},
        "ls": ["images"], "list": ["images"], "rm": ["rmi"], "remove": ["rmi"],
        "inspect": ["inspect", "--type", "image"],
    },
    "system": {"info": ["info"], "events": ["events"]},
}

#: The groups' own subcommands (not aliases)
OWN = {"container": {"prune"}, "image": {"prune", "history"}, "system": {"df", "prune"}}

#: Global flags that take a value (to find where the command starts).
_VALUED = {"-H", "--host", "-l", "--log-level", "--tlscacert", "--tlscert", "--tlskey"}


def management_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``container ls`` (and the like) replaced by the command it stands for."""
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "--":
        i += 2 if argv[i] in _VALUED and "=" not in argv[i] else 1
    if i + 1 < len(argv) and argv[i] in ALIASES:
        group, sub = argv[i], argv[i + 1]
        alias = ALIASES[group].get(sub)
        if alias is not None:
            return [*argv[:i], *alias, *argv[i + 2:]]
        if not sub.startswith("-") and sub not in OWN[group]:
            raise exits.Usage(f"'{group} {sub}' is not a skiff command", prog=f"skiff {group}")
    return list(argv)


def register(sub: argparse._SubParsersAction) -> None:
    from skiff.cli.imagetools import _need_subcommand

    names = ", ".join(sorted([*ALIASES["container"], "prune"]))
    container = sub.add_parser("container", prog="skiff container", help="Manage containers",
                               description=f"Manage containers: {names}", usage="skiff container COMMAND")
    container.set_defaults(func=_need_subcommand, run_like=False, prog="skiff container", parser=container)
    csub = container.add_subparsers(dest="container_command", metavar="COMMAND", parser_class=Parser)
    p = add_command(csub, "prune", cmd_container_prune, "Remove all stopped containers")
    p.prog = "skiff container prune"
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    p.add_argument("--filter", action="append", default=[], help="provide filter values (e.g. 'until=<timestamp>', "
                   "'label=<key>[=<value>]', 'label!=<key>[=<value>]')")
    p.set_defaults(prog="skiff container prune")


def register_system(ssub: argparse._SubParsersAction) -> None:
    p = add_command(ssub, "prune", cmd_system_prune, "Remove unused data")
    p.prog = "skiff system prune"
    p.add_argument("-a", "--all", action="store_true", help="remove all unused images not just dangling ones")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    p.add_argument("--volumes", action="store_true", help="prune anonymous volumes")
    p.add_argument("--filter", action="append", default=[], help="provide filter values (e.g. 'until=<timestamp>', "
                   "'label=<key>[=<value>]', 'label!=<key>[=<value>]')")
    p.set_defaults(prog="skiff system prune")


def _confirm(lines: list[str]) -> bool:
    print("\n".join(lines))
    print("Are you sure you want to continue? [y/N] ", end="", flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _label_matches(labels: Any, key: str, value: str) -> bool:
    k, sep, v = value.partition("=")
    present = k in labels and (not sep or labels[k] == v)
    return present if key == "label" else not present


def _prunable(client: Client, filters: list[tuple[str, str]]) -> list[Any]:
    """The stopped containers the filters keep (``until``, ``label``, ``label!``), newest first."""
    from skiff.api.v1 import api_pb2
    from skiff.cli.containers import parse_timestamp, status_word

    for key, _ in filters:
        if key not in ("until", "label", "label!"):
            raise exits.CLIError(f"Error response from daemon: invalid filter '{key}'")
    until = []
    for key, value in filters:
        if key == "until":
            try:
                until.append(parse_timestamp(value, time.time_ns()))
            except ValueError as err:
                raise exits.CLIError(f"Error response from daemon: {err}") from None
    with client.translated():
        found = client.containers.ListContainers(api_pb2.ListContainersRequest(all=True, size=True),
                                                 timeout=120).containers
    out = []
    for c in found:
        if status_word(c) not in ("created", "exited", "dead"):
            continue
        if any((c.created.seconds, c.created.nanos) >= u for u in until):
            continue
        if not all(_label_matches(c.config.labels, k, v) for k, v in filters if k != "until"):
            continue
        out.append(c)
    return sorted(out, key=lambda c: (c.created.seconds, c.created.nanos), reverse=True)


def prune_containers(client: Client, filters: list[tuple[str, str]]) -> tuple[list[str], int]:
    """Remove the stopped containers (one RemoveContainers call per 1000); (their ids, the bytes
    their writable layers held). One started meanwhile is skipped with its error, as Docker."""
    from skiff.api.v1 import api_pb2

    found = {c.id: c for c in _prunable(client, filters)}
    ids = list(found)
    removed, space = [], 0
    for i in range(0, len(ids), 1000):
        with client.translated():
            results = client.containers.RemoveContainers(
                api_pb2.RemoveContainersRequest(containers=ids[i:i + 1000]), timeout=300).results
        for r in results:
            if r.code == 0:
                removed.append(r.id or r.container)
                space += max(found[r.container].size_rw, 0)
            elif r.reason != "CONTAINER_NOT_FOUND":  # gone meanwhile: nothing to say
                print(f"Error response from daemon: {r.message}", file=sys.stderr)
    return removed, space


def cmd_container_prune(client: Client, args: argparse.Namespace) -> int:
    filters = split_kv(args.filter, "filter")
    if not args.force and not _confirm(["WARNING! This will remove all stopped containers."]):
        return 0
    removed, space = prune_containers(client, filters)
    if removed:
        print("Deleted Containers:")
        print("".join(f"{cid}\n" for cid in removed))
    print(f"Total reclaimed space: {fmt.human_size(space)}")
    return 0


def cmd_system_prune(client: Client, args: argparse.Namespace) -> int:
    """Docker's order: stopped containers, unused networks, (anonymous volumes), images; the
    filters (``until``, ``label``, ``label!``) apply to each (volumes: not ``until``, as Docker)."""
    from skiff.api.v1 import api_pb2, api_pb2_grpc
    from skiff.types.v1 import types_pb2

    filters = split_kv(args.filter, "filter")
    if args.volumes and any(k == "until" for k, _ in filters):
        raise exits.CLIError('ERROR: The "until" filter is not supported with "--volumes"')
    api_filters = [types_pb2.Filter(key=k, value=v) for k, v in filters]
    if not args.force:
        what = ["WARNING! This will remove:", "  - all stopped containers",
                "  - all networks not used by at least one container"]
        if args.volumes:
            what.append("  - all anonymous volumes not used by at least one container")
        what.append("  - all images without at least one container associated to them" if args.all
                    else "  - all dangling images")
        if not _confirm([*what, ""]):
            return 0
    removed, space = prune_containers(client, filters)
    if removed:
        print("Deleted Containers:")
        print("".join(f"{cid}\n" for cid in removed))
    with client.translated():
        names = api_pb2_grpc.NetworkServiceStub(client.channel).PruneNetworks(api_pb2.PruneNetworksRequest(
            filters=api_filters),
                                                                            timeout=120).names
    if names:
        print("Deleted Networks:")
        print("".join(f"{n}\n" for n in names))
    if args.volumes:
        with client.translated():
            vols = api_pb2_grpc.VolumeServiceStub(client.channel).PruneVolumes(
                api_pb2.PruneVolumesRequest(filters=api_filters), timeout=300)
        if vols.names:
            print("Deleted Volumes:")
            print("".join(f"{n}\n" for n in vols.names))
        space += vols.space_reclaimed
    from skiff.cli.imagetools import print_pruned_images

    with client.translated():
        imgs = api_pb2_grpc.ImageToolServiceStub(client.channel).PruneImages(
            api_pb2.PruneImagesRequest(all=args.all, filters=api_filters), timeout=600)
    print_pruned_images(imgs)
    space += imgs.space_reclaimed
    print(f"Total reclaimed space: {fmt.human_size(space)}")
    return 0
