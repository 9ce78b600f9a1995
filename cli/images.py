"""Image commands: ``import``, ``images``, ``rmi``."""

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
                   help="apply a Dockerfile instruction (CMD, ENTRYPOINT, ENV, WORKDIR, USER)")
    p.add_argument("-m", "--message", default="", help="set commit message for imported image")
    p.add_argument("file", help="tarball (plain or gzip), or - for stdin")
    p.add_argument("reference", nargs="?", default="", help="REPOSITORY[:TAG]")

    p = add_command(sub, "images", cmd_images, "List images")
    p.add_argument("-a", "--all", action="store_true", help="show all images (default hides intermediate)")
    p.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")
    p.add_argument("--no-trunc", action="store_true", help="don't truncate output")
    p.add_argument("-f", "--filter", action="append", help="filter output based on conditions provided")

    p = add_command(sub, "rmi", cmd_rmi, "Remove one or more images")
    p.add_argument("-f", "--force", action="store_true", help="force removal of the image")
    p.add_argument("images", nargs="+", metavar="IMAGE")


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
    header = ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
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
