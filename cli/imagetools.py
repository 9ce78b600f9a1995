"""Archive and snapshot commands: ``save``, ``load``, ``commit``, ``diff``, ``export``,
``history``, ``image prune``, ``login``, ``logout``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

from skiff.cli import exits
from skiff.cli import format as fmt
from skiff.cli.args import Parser, add_command, parse_bool

if TYPE_CHECKING:
    from skiff.api.v1 import api_pb2_grpc
    from skiff.cli.client import Client

CHUNK = 1 << 20


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "save", cmd_save, "Save one or more images to a tar archive (streamed to STDOUT by default)",
                    usage="skiff save [OPTIONS] IMAGE [IMAGE...]")
    p.add_argument("-o", "--output", default="", help="write to a file, instead of STDOUT")
    p.add_argument("images", nargs="+", metavar="IMAGE")

    p = add_command(sub, "load", cmd_load, "Load an image from a tar archive or STDIN")
    p.add_argument("-i", "--input", default="", help="read from tar archive file, instead of STDIN")
    p.add_argument("-q", "--quiet", action="store_true", help="suppress the load output")

    p = add_command(sub, "commit", cmd_commit, "Create a new image from a container's changes",
                    usage="skiff commit [OPTIONS] CONTAINER [REPOSITORY[:TAG]]")
    p.add_argument("-a", "--author", default="", help='author (e.g., "John Hannibal Smith <hannibal@a-team.com>")')
    p.add_argument("-c", "--change", action="append", default=[], help="apply Dockerfile instruction to the image")
    p.add_argument("-m", "--message", default="", help="commit message")
    p.add_argument("-p", "--pause", type=parse_bool, default=True, metavar="BOOL",
                   help="pause container during commit (default true; --pause=false to not)")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("reference", nargs="?", default="", metavar="REPOSITORY[:TAG]")

    p = add_command(sub, "diff", cmd_diff, "Inspect changes to files or directories on a container's filesystem")
    p.add_argument("container", metavar="CONTAINER")

    p = add_command(sub, "export", cmd_export, "Export a container's filesystem as a tar archive")
    p.add_argument("-o", "--output", default="", help="write to a file, instead of STDOUT")
    p.add_argument("container", metavar="CONTAINER")

    _history_args(add_command(sub, "history", cmd_history, "Show the history of an image"))

    image = sub.add_parser("image", prog="skiff image", help="Manage images", description="Manage images",
                           usage="skiff image COMMAND")
    image.set_defaults(func=_need_subcommand, run_like=False, prog="skiff image", parser=image)
    isub = image.add_subparsers(dest="image_command", metavar="COMMAND", parser_class=Parser)
    p = add_command(isub, "prune", cmd_prune, "Remove unused images")
    p.prog = "skiff image prune"
    p.add_argument("-a", "--all", action="store_true", help="remove all unused images, not just dangling ones")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    p.add_argument("--filter", action="append", default=[],
                   help="provide filter values (e.g. 'until=<timestamp>', 'label=<key>[=<value>]', 'label!=...')")
    p.set_defaults(prog="skiff image prune")
    p = add_command(isub, "history", cmd_history, "Show the history of an image")
    _history_args(p)

    system = sub.add_parser("system", prog="skiff system", help="Manage skiff", description="Manage skiff",
                            usage="skiff system COMMAND")
    system.set_defaults(func=_need_subcommand, run_like=False, prog="skiff system", parser=system)
    ssub = system.add_subparsers(dest="system_command", metavar="COMMAND", parser_class=Parser)
    p = add_command(ssub, "df", cmd_df, "Show skiff disk usage")
    p.prog = "skiff system df"
    p.set_defaults(prog="skiff system df")
    from skiff.cli import prune

    prune.register_system(ssub)

    p = add_command(sub, "login", cmd_login, "Log in to a registry", usage="skiff login [OPTIONS] [SERVER]")
    p.add_argument("-u", "--username", default="")
    p.add_argument("-p", "--password", default="")
    p.add_argument("--password-stdin", action="store_true", help="take the password from stdin")
    p.add_argument("server", nargs="?", default="")

    p = add_command(sub, "logout", cmd_logout, "Log out from a registry", usage="skiff logout [SERVER]")
    p.add_argument("server", nargs="?", default="")


def _history_args(p: Parser) -> None:
    p.add_argument("-H", "--human", default="true", help="print sizes and dates in human readable format")
    p.add_argument("--no-trunc", action="store_true", help="don't truncate output")
    p.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")
    p.add_argument("image", metavar="IMAGE")


def _need_subcommand(client: Client, args: argparse.Namespace) -> int:
    raise exits.Usage(f"'{args.prog}' requires a subcommand", prog=args.prog)


def _stub(client: Client) -> api_pb2_grpc.ImageToolServiceStub:
    from skiff.api.v1 import api_pb2_grpc

    return api_pb2_grpc.ImageToolServiceStub(client.channel)


def _write_stream(chunks: Iterator[Any], output: str, what: str) -> None:
    """Write to ``output`` (atomically: a temp file renamed at the end) or to stdout, refusing a terminal."""
    if not output:
        if sys.stdout.isatty():
            raise exits.CLIError(f"cowardly refusing to save to a terminal. Use the -o flag or redirect ({what})")
        out = sys.stdout.buffer
        for resp in chunks:
            out.write(resp.chunk)
        out.flush()
        return
    tmp = f"{output}.skiff-tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            for resp in chunks:
                f.write(resp.chunk)
        os.replace(tmp, output)
    except OSError as err:
        raise exits.CLIError(f"failed to save: {err.strerror or err}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def cmd_save(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2

    with client.translated():
        _write_stream(_stub(client).SaveImages(api_pb2.SaveImagesRequest(images=args.images)), args.output, "save")
    return 0


def _read_chunks(src: IO[bytes]) -> Iterator[Any]:
    from skiff.api.v1 import api_pb2

    while chunk := src.read(CHUNK):
        yield api_pb2.LoadImagesRequest(chunk=chunk)


def cmd_load(client: Client, args: argparse.Namespace) -> int:
    if args.input:
        try:
            src: IO[bytes] = open(args.input, "rb")  # noqa: SIM115 (closed below)
        except OSError as err:
            raise exits.CLIError(f"open {args.input}: {(err.strerror or str(err)).lower()}") from None
    else:
        if sys.stdin.isatty():
            raise exits.CLIError("requested load from stdin, but stdin is empty")
        src = sys.stdin.buffer
    try:
        with client.translated():
            resp = _stub(client).LoadImages(_read_chunks(src))
    finally:
        if src is not sys.stdin.buffer:
            src.close()
    if not args.quiet:
        for line in resp.messages:
            print(line)
    return 0


def cmd_commit(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2

    with client.translated():
        resp = _stub(client).CommitContainer(api_pb2.CommitContainerRequest(
            container=args.container, reference=args.reference, message=args.message, author=args.author,
            changes=args.change, no_pause=not args.pause))
    print(resp.image.id)
    return 0


def cmd_diff(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2
    from skiff.types.v1 import types_pb2

    letters = {types_pb2.CHANGE_KIND_ADDED: "A", types_pb2.CHANGE_KIND_MODIFIED: "C",
               types_pb2.CHANGE_KIND_DELETED: "D"}
    with client.translated():
        resp = _stub(client).ListContainerChanges(api_pb2.ListContainerChangesRequest(container=args.container),
                                                  timeout=60)
    for change in resp.changes:
        print(f"{letters.get(change.kind, '?')} {change.path}")
    return 0


def cmd_export(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2

    with client.translated():
        _write_stream(_stub(client).ExportContainer(api_pb2.ExportContainerRequest(container=args.container)),
                      args.output, "export")
    return 0


def cmd_history(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2

    with client.translated():
        resp = _stub(client).GetImageHistory(api_pb2.GetImageHistoryRequest(image=args.image), timeout=60)
    human = args.human.lower() not in ("false", "0")
    if args.quiet:
        for item in resp.items:
            print(item.id if args.no_trunc or item.id == "<missing>" else fmt.short_id(item.id))
        return 0
    now = time.time()
    rows = []
    for item in resp.items:
        ident = item.id if args.no_trunc or item.id == "<missing>" else fmt.short_id(item.id)
        if human:
            created = fmt.ago(item.created.seconds, now) if item.created.seconds else "N/A"
            size = fmt.human_size(item.size)
        else:
            created = fmt.rfc3339nano(item.created.seconds, item.created.nanos)
            size = str(item.size)
        created_by = item.created_by if args.no_trunc else fmt.ellipsis(item.created_by, 45)
        rows.append([ident, created, created_by, size, item.comment])
    sys.stdout.write(fmt.table(["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"], rows))
    return 0


def cmd_prune(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2

    if not args.force:
        which = "all images without at least one container associated to them" if args.all else \
            "all dangling images"
        print(f"WARNING! This will remove {which}.\nAre you sure you want to continue? [y/N] ", end="", flush=True)
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    with client.translated():
        resp = _stub(client).PruneImages(api_pb2.PruneImagesRequest(all=args.all, filters=prune_filters(args.filter)),
                                         timeout=600)
    print_pruned_images(resp)
    print(f"Total reclaimed space: {fmt.human_size(resp.space_reclaimed)}")
    return 0


def prune_filters(items: list[str]) -> list[Any]:
    """``--filter key=value`` flags as the API's filters (checked by the engine, as Docker's)."""
    from skiff.cli.args import split_kv
    from skiff.types.v1 import types_pb2

    return [types_pb2.Filter(key=k, value=v) for k, v in split_kv(items, "filter")]


def print_pruned_images(resp: Any) -> None:
    """Docker's ``Deleted Images:`` section of a prune."""
    if resp.items:
        print("Deleted Images:")
        for item in resp.items:
            kind = item.WhichOneof("item")
            print(f"untagged: {item.untagged}" if kind == "untagged" else f"deleted: {item.deleted}")
        print()


def _server_key(server: str) -> str:
    from skiff.cli import auth

    server = server.removeprefix("https://").removeprefix("http://").rstrip("/")
    if not server or server in ("docker.io", "index.docker.io", "registry-1.docker.io", "index.docker.io/v1"):
        return auth.HUB_KEY
    return server


def cmd_login(client: Client, args: argparse.Namespace) -> int:
    import getpass

    from skiff.api.v1 import api_pb2
    from skiff.cli import auth
    from skiff.types.v1 import types_pb2

    key = _server_key(args.server)
    if args.password and args.password_stdin:
        raise exits.Usage("--password and --password-stdin are mutually exclusive", prog="skiff login")
    username, password = args.username, args.password
    if args.password_stdin:
        if not username:
            raise exits.Usage("Must provide --username with --password-stdin", prog="skiff login")
        password = sys.stdin.read().rstrip("\r\n")
    else:
        if args.password:
            print("WARNING! Using --password via the CLI is insecure. Use --password-stdin.", file=sys.stderr)
        if not username:
            username = input("Username: ").strip()
        if not password:
            password = getpass.getpass("Password: ")
    if not username or not password:
        raise exits.CLIError("Error: Cannot perform an interactive login from a non TTY device"
                             if not sys.stdin.isatty() else "Error: username and password are required")
    server = "" if key == auth.HUB_KEY else key
    with client.translated():
        resp = _stub(client).Login(api_pb2.LoginRequest(
            server=server, auth=types_pb2.RegistryAuth(username=username, password=password, server_address=key)),
            timeout=60)
    auth.store(key, username, password)
    print(resp.status or "Login Succeeded")
    return 0


def cmd_logout(client: Client, args: argparse.Namespace) -> int:
    from skiff.cli import auth

    key = _server_key(args.server)
    if auth.erase(key):
        print(f"Removing login credentials for {key}")
    else:
        print(f"Not logged in to {key}")
    return 0


def digest_rows(imgs: list[Any], rows: list[list[str]]) -> list[list[str]]:
    """``images --digests``: a DIGEST column after TAG, from the repo digest of the row's repository."""
    out: list[list[str]] = []
    i = 0
    for img in imgs:
        n = max(len(img.repo_tags), 1)
        digests = {d.split("@", 1)[0]: d.split("@", 1)[1] for d in img.repo_digests}
        for row in rows[i:i + n]:
            out.append([row[0], row[1], digests.get(row[0], "<none>"), *row[2:]])
        i += n
    return out


def _volume_row(client: Client) -> list[str]:
    """Local Volumes, from the engine's VolumeService (active: used by a container; sizes walked
    by graphsvc, as Docker's UsageData.Size)."""
    from skiff.api.v1 import api_pb2, api_pb2_grpc

    stub_cls = getattr(api_pb2_grpc, "VolumeServiceStub", None)
    request_cls = getattr(api_pb2, "ListVolumesRequest", None)
    if stub_cls is None or request_cls is None:
        return ["Local Volumes", "0", "0", "0B", "0B"]
    with client.translated():
        vols = list(stub_cls(client.channel).ListVolumes(request_cls(with_size=True), timeout=120).volumes)

    def size(v: Any) -> int:
        return max(int(v.size), 0)

    active = [v for v in vols if v.ref_count > 0]
    total = sum(size(v) for v in vols)
    reclaimable = total - sum(size(v) for v in active)
    pct = f" ({reclaimable * 100 // total}%)" if total else ""
    return ["Local Volumes", str(len(vols)), str(len(active)), fmt.human_size(total),
            fmt.human_size(reclaimable) + pct]


def cmd_df(client: Client, args: argparse.Namespace) -> int:
    """Images by size (active: used by a container), containers by writable layer (active: running),
    volumes when the engine has them."""
    from skiff.api.v1 import api_pb2
    from skiff.types.v1 import types_pb2

    with client.translated():
        imgs = client.images.ListImages(api_pb2.ListImagesRequest(all=True), timeout=60).images
        ctrs = client.containers.ListContainers(api_pb2.ListContainersRequest(all=True, size=True),
                                                timeout=120).containers
    used = {c.image_id for c in ctrs}
    layers: dict[str, int] = {}
    active_layers: set[str] = set()
    for img in imgs:
        share = img.size // max(len(img.layers), 1)
        for lid in img.layers:
            layers.setdefault(lid, share)
            if img.id in used:
                active_layers.add(lid)
    total = sum(layers.values())
    reclaimable = sum(size for lid, size in layers.items() if lid not in active_layers)
    pct = f" ({reclaimable * 100 // total}%)" if total else ""
    live = (types_pb2.CONTAINER_STATUS_RUNNING, types_pb2.CONTAINER_STATUS_PAUSED,
            types_pb2.CONTAINER_STATUS_RESTARTING)
    running = sum(1 for c in ctrs if c.state.status == types_pb2.CONTAINER_STATUS_RUNNING)
    ctr_total = sum(c.size_rw for c in ctrs)
    ctr_reclaimable = sum(c.size_rw for c in ctrs if c.state.status not in live)
    ctr_pct = f" ({ctr_reclaimable * 100 // ctr_total}%)" if ctr_total else ""
    rows = [
        ["Images", str(len(imgs)), str(sum(1 for i in imgs if i.id in used)), fmt.human_size(total),
         fmt.human_size(reclaimable) + pct],
        ["Containers", str(len(ctrs)), str(running), fmt.human_size(ctr_total),
         fmt.human_size(ctr_reclaimable) + ctr_pct],
        _volume_row(client),
        ["Build Cache", "0", "0", "0B", "0B"],
    ]
    sys.stdout.write(fmt.table(["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], rows))
    return 0
