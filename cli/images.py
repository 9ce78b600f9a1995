"""Image commands: ``import``, ``images``, ``rmi``, ``pull``, ``push``, ``tag``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING

from skiff.cli import exits
from skiff.cli import format as fmt
from skiff.cli.args import add_command

if TYPE_CHECKING:
    from skiff.api.v1 import api_pb2
    from skiff.cli.client import Client
    from skiff.types.v1 import types_pb2

#: Size of each chunk of an import stream (well under grpc's 4 MiB message limit).
CHUNK = 1 << 20


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "import", cmd_import,
                    "Import the contents from a tarball to create a filesystem image",
                    usage="skiff import [OPTIONS] file|- [REPOSITORY[:TAG]]")
    p.add_argument("-c", "--change", action="append", default=[],
                   help="apply a Dockerfile instruction (CMD, ENTRYPOINT, ENV, EXPOSE, HEALTHCHECK, LABEL, ONBUILD, "
                        "STOPSIGNAL, USER, VOLUME, WORKDIR)")
    p.add_argument("-m", "--message", default="", help="set commit message for imported image")
    p.add_argument("file", help="tarball (plain or gzip), or - for stdin")
    p.add_argument("reference", nargs="?", default="", help="REPOSITORY[:TAG]")

    p = add_command(sub, "images", cmd_images, "List images")
    p.add_argument("-a", "--all", action="store_true", help="show all images (default hides intermediate)")
    p.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")
    p.add_argument("--no-trunc", action="store_true", help="don't truncate output")
    p.add_argument("-f", "--filter", action="append", help="filter output based on conditions provided")
    p.add_argument("--digests", action="store_true", help="show digests")
    p.add_argument("--format", default="", help="format output using a custom template: 'table', "
                   "'table TEMPLATE', 'json', or a Go template (fields: ID, Repository, Tag, Digest, "
                   "CreatedSince, CreatedAt, Size)")

    p = add_command(sub, "rmi", cmd_rmi, "Remove one or more images")
    p.add_argument("-f", "--force", action="store_true", help="force removal of the image")
    p.add_argument("images", nargs="+", metavar="IMAGE")

    p = add_command(sub, "pull", cmd_pull, "Download an image from a registry",
                    usage="skiff pull [OPTIONS] NAME[:TAG|@DIGEST]")
    p.add_argument("--platform", default="", help="set platform if server is multi-platform capable (os/arch)")
    p.add_argument("-q", "--quiet", action="store_true", help="suppress verbose output")
    p.add_argument("name", metavar="NAME[:TAG|@DIGEST]")

    p = add_command(sub, "push", cmd_push, "Upload an image to a registry", usage="skiff push NAME[:TAG]")
    p.add_argument("-q", "--quiet", action="store_true", help="suppress verbose output")
    p.add_argument("name", metavar="NAME[:TAG]")

    p = add_command(sub, "tag", cmd_tag, "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE",
                    usage="skiff tag SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]")
    p.add_argument("source", metavar="SOURCE_IMAGE[:TAG]")
    p.add_argument("target", metavar="TARGET_IMAGE[:TAG]")


def _chunks(meta: api_pb2.ImportImageMetadata, src: IO[bytes]) -> Iterator[api_pb2.ImportImageRequest]:
    """The import stream: metadata first, then the tarball in CHUNK-sized pieces."""
    from skiff.api.v1 import api_pb2

    yield api_pb2.ImportImageRequest(metadata=meta)
    while chunk := src.read(CHUNK):
        yield api_pb2.ImportImageRequest(chunk=chunk)


def cmd_import(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2

    meta = api_pb2.ImportImageMetadata(reference=args.reference, changes=args.change, message=args.message)
    if args.file == "-":
        src: IO[bytes] = sys.stdin.buffer
    else:
        try:
            src = open(args.file, "rb")  # noqa: SIM115 (closed below, whatever happens)
        except OSError as err:
            raise exits.CLIError(f"open {args.file}: {(err.strerror or str(err)).lower()}") from None
    try:
        with client.translated():
            resp = client.images.ImportImage(_chunks(meta, src))
    finally:
        if src is not sys.stdin.buffer:
            src.close()
    print(resp.image.id)
    return 0


def _split_tag(ref: str) -> tuple[str, str]:
    """``repo:tag`` into its parts; a ``:`` before the last ``/`` is a registry port."""
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, "<none>"
    return name, tag


def image_rows(imgs: list[types_pb2.Image], no_trunc: bool, now: float) -> list[list[str]]:
    rows: list[list[str]] = []
    for img in imgs:
        ident = img.id if no_trunc else fmt.short_id(img.id)
        created = fmt.ago(img.created.seconds, now) if img.created.seconds else "N/A"
        size = fmt.human_size(img.size)
        refs = [_split_tag(t) for t in img.repo_tags]
        if not refs:
            repo = img.repo_digests[0].split("@", 1)[0] if img.repo_digests else "<none>"
            refs = [(repo, "<none>")]
        rows.extend([repo, tag, ident, created, size] for repo, tag in refs)
    return rows


#: ``images --format`` fields and their column names (Docker's)
IMAGE_HEADERS = {"ID": "IMAGE ID", "Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST",
                 "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE", "Containers": "CONTAINERS",
                 "SharedSize": "SHARED SIZE", "UniqueSize": "UNIQUE SIZE", "VirtualSize": "VIRTUAL SIZE"}
IMAGE_TABLE = "{{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"


def _formatted(imgs: list[types_pb2.Image], no_trunc: bool, template: str) -> str:
    from skiff.cli import listformat
    from skiff.cli.imagetools import digest_rows

    rows = digest_rows(imgs, image_rows(imgs, no_trunc, time.time()))
    created = [listformat.created_at(img.created.seconds) for img in imgs for _ in (img.repo_tags or [None])]
    items = [{"Containers": "N/A", "CreatedAt": at, "CreatedSince": r[4], "Digest": r[2], "ID": r[3],
              "Repository": r[0], "SharedSize": "N/A", "Size": r[5], "Tag": r[1], "UniqueSize": "N/A",
              "VirtualSize": r[5]} for r, at in zip(rows, created, strict=True)]
    return listformat.format_list(template, IMAGE_TABLE, items, IMAGE_HEADERS)


def cmd_images(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2
    from skiff.cli.args import split_kv
    from skiff.types.v1 import types_pb2

    filters = [types_pb2.Filter(key=k, value=v) for k, v in split_kv(args.filter, "filter")]
    with client.translated():
        resp = client.images.ListImages(api_pb2.ListImagesRequest(all=args.all, filters=filters), timeout=60)
    imgs = sorted(resp.images, key=lambda i: (i.created.seconds, i.created.nanos), reverse=True)
    if args.quiet:
        seen: dict[str, None] = {}
        for img in imgs:
            seen.setdefault(img.id if args.no_trunc else fmt.short_id(img.id))
        sys.stdout.write("".join(f"{i}\n" for i in seen))
        return 0
    if getattr(args, "format", ""):
        sys.stdout.write(_formatted(imgs, args.no_trunc, args.format))
        return 0
    header = ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
    if getattr(args, "digests", False):
        from skiff.cli.imagetools import digest_rows

        header.insert(2, "DIGEST")
        sys.stdout.write(fmt.table(header, digest_rows(imgs, image_rows(imgs, args.no_trunc, time.time()))))
        return 0
    sys.stdout.write(fmt.table(header, image_rows(imgs, args.no_trunc, time.time())))
    return 0


def cmd_rmi(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2
    from skiff.common.errors import SkiffError

    failed = False
    for name in args.images:
        try:
            with client.translated():
                resp = client.images.RemoveImage(api_pb2.RemoveImageRequest(image=name, force=args.force),
                                                 timeout=60)
        except SkiffError as err:
            print(f"Error response from daemon: {err.message}", file=sys.stderr)
            failed = True
            continue
        for item in resp.items:
            kind = item.WhichOneof("item")
            if kind == "untagged":
                print(f"Untagged: {item.untagged}")
            elif kind == "deleted":
                print(f"Deleted: {item.deleted}")
    return exits.FAILED if failed else 0


# --- pull, push, tag ---------------------------------------------------------------

_BAR = 50


def progress_line(p: types_pb2.Progress, tty: bool) -> str:
    """``<id>: <status>``, with Docker's ``[====>   ] 1.2MB/3.4MB`` bar on a terminal."""
    text = f"{p.id}: {p.status}" if p.id else p.status
    if tty and p.total > 0 and p.status in ("Downloading", "Extracting", "Pushing"):
        done = min(_BAR, _BAR * p.current // p.total)
        bar = "=" * done + (">" if done < _BAR else "") + " " * max(0, _BAR - done - 1)
        text += f" [{bar}] {fmt.human_size(p.current)}/{fmt.human_size(p.total)}"
    return text


class ProgressPrinter:
    """Docker's jsonmessage display: one line per layer, redrawn in place on a terminal;
    on anything else each change of status once (no byte counts)."""

    def __init__(self, out: IO[str], tty: bool | None = None):
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.lines: list[str] = []  # ids, in the order of their lines
        self.last: dict[str, str] = {}

    def show(self, p: types_pb2.Progress) -> None:
        line = progress_line(p, self.tty)
        if not p.id:
            self.out.write(line + "\n")
            self.lines = []
            self.out.flush()
            return
        if not self.tty:
            if self.last.get(p.id) != p.status:
                self.last[p.id] = p.status
                self.out.write(line + "\n")
        elif p.id in self.lines:
            up = len(self.lines) - self.lines.index(p.id)
            self.out.write(f"\x1b[{up}A\r\x1b[2K{line}\r\x1b[{up}B")
        else:
            self.lines.append(p.id)
            self.out.write(line + "\n")
        self.out.flush()


def _auth(name: str) -> types_pb2.RegistryAuth:
    from skiff.cli import auth

    return auth.for_reference(name)


def _mirror_auths(name: str) -> list[types_pb2.RegistryAuth]:
    from skiff.cli import auth

    return auth.for_mirrors(name)


def pull(client: Client, name: str, platform: str = "", out: IO[str] | None = None) -> types_pb2.Image:
    """Pull with progress on ``out`` (stdout by default); returns the image."""
    from skiff.api.v1 import api_pb2

    out = out or sys.stdout
    printer = ProgressPrinter(out)
    image = None
    with client.translated():
        for resp in client.images.PullImage(
                api_pb2.PullImageRequest(reference=name, platform=platform, auth=_auth(name),
                                         mirror_auths=_mirror_auths(name))):
            if resp.WhichOneof("part") == "image":
                image = resp.image
            else:
                printer.show(resp.progress)
    if image is None:
        raise exits.CLIError("Error response from daemon: the pull ended without an image")
    return image


def full_reference(name: str) -> str:
    """``busybox`` → ``docker.io/library/busybox:latest``, as docker pull's last line."""
    base, sep, digest = name.partition("@")
    if not sep and _split_tag(base)[1] == "<none>":
        base += ":latest"
    first = base.split("/", 1)[0]
    if "/" not in base or not ("." in first or ":" in first or first == "localhost"):
        base = "docker.io/" + (base if "/" in base.split(":", 1)[0] else "library/" + base)
    return base + (sep + digest if sep else "")


def cmd_pull(client: Client, args: argparse.Namespace) -> int:
    import io

    pull(client, args.name, args.platform, io.StringIO() if args.quiet else None)
    print(full_reference(args.name))
    return 0


def cmd_push(client: Client, args: argparse.Namespace) -> int:
    import io

    from skiff.api.v1 import api_pb2

    printer = ProgressPrinter(io.StringIO() if args.quiet else sys.stdout)
    digest = ""
    with client.translated():
        for resp in client.images.PushImage(api_pb2.PushImageRequest(reference=args.name, auth=_auth(args.name))):
            if resp.WhichOneof("part") == "digest":
                digest = resp.digest
            else:
                printer.show(resp.progress)
    if args.quiet:
        print(digest)
    return 0


def cmd_tag(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2

    with client.translated():
        client.images.TagImage(api_pb2.TagImageRequest(source=args.source, target=args.target), timeout=60)
    return 0
