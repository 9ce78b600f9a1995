"""``skiff cp``: files between a container and the host, as tar streams through the gateway.

Docker's rules (``docker cp``): exactly one side is ``CONTAINER:PATH``; ``-`` is
a tar on stdin/stdout; a directory ``SRC`` is copied *into* an existing
directory, or *as* a missing one; ``SRC/.`` copies the directory's contents;
a file may replace a file, never a directory; ``DEST/`` must be a directory.
On the host the archive from the container is extracted with every path
resolved inside the destination (no entry can reach outside it); ``-a`` keeps
the uid/gid of the files copied into the container.
"""

from __future__ import annotations

import argparse
import os
import posixpath
import stat
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from skiff.cli import exits
from skiff.cli.args import add_command

if TYPE_CHECKING:
    from skiff.cli.client import Client

CHUNK = 1 << 20


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "cp", cmd_cp, "Copy files/folders between a container and the local filesystem",
                    usage="skiff cp [OPTIONS] CONTAINER:SRC_PATH DEST_PATH|-\n"
                          "       skiff cp [OPTIONS] SRC_PATH|- CONTAINER:DEST_PATH")
    p.add_argument("-a", "--archive", action="store_true", help="archive mode (copy all uid/gid information)")
    p.add_argument("-L", "--follow-link", action="store_true", help="always follow symbol link in SRC_PATH")
    p.add_argument("-q", "--quiet", action="store_true", help="suppress progress output (no progress here)")
    p.add_argument("src", metavar="SRC")
    p.add_argument("dest", metavar="DEST")


def split_arg(arg: str) -> tuple[str, str]:
    """("container", "path") or ("", local path): Docker's splitCpArg."""
    if arg.startswith(("/", ".")) or arg == "-":
        return "", arg
    container, sep, path = arg.partition(":")
    if not sep or "/" in container:
        return "", arg
    return container, path


def cmd_cp(client: Client, args: argparse.Namespace) -> int:
    sc, sp = split_arg(args.src)
    dc, dp = split_arg(args.dest)
    if sc and dc:
        raise exits.Usage("copying between containers is not supported")
    if not sc and not dc:
        raise exits.Usage("must specify at least one container source")
    if sc:
        return _from_container(client, sc, sp, dp, args)
    return _to_container(client, sp, dc, dp, args)


# --- container -> host ---------------------------------------------------------------


def _responses(client: Client, container: str, path: str) -> tuple[Any, Iterator[bytes]]:
    from skiff.api.v1 import api_pb2

    stream = client.containers.CopyFromContainer(api_pb2.CopyFromContainerRequest(container=container, path=path))
    with client.translated():
        first = next(stream)

    def chunks() -> Iterator[bytes]:
        with client.translated():
            for resp in stream:
                yield resp.chunk

    return first.stat, chunks()


def _from_container(client: Client, container: str, src: str, dest: str, args: argparse.Namespace) -> int:
    from skiff.common import streams

    if not src:
        src = "/"
    st, chunks = _responses(client, container, src)
    if args.follow_link and stat.S_ISLNK(st.mode):
        # -L: the link's target (resolved inside the container again), under the link's name.
        for _ in chunks:
            pass
        name_of_link = st.name
        target = st.link_target if st.link_target.startswith("/") else \
            posixpath.join(posixpath.dirname(src.rstrip("/")) or "/", st.link_target)
        st, chunks = _responses(client, container, target)
        st.name = name_of_link
    if dest == "-":
        out = sys.stdout.buffer
        for chunk in chunks:
            out.write(chunk)
        out.flush()
        return 0
    src_is_dir = stat.S_ISDIR(st.mode)
    contents = src.endswith("/.") or src in (".", "/")
    dest_abs = os.path.abspath(dest)
    if os.path.isdir(dest_abs):
        if src_is_dir and contents:
            parent, name = dest_abs, None
        else:
            parent, name = dest_abs, st.name if st.name != "/" else None
    elif os.path.lexists(dest_abs):
        if src_is_dir:
            raise exits.CLIError(f"cannot copy directory to file: {dest}")
        parent, name = os.path.dirname(dest_abs), os.path.basename(dest_abs)
    else:
        if dest.endswith("/") and not src_is_dir:
            raise exits.CLIError(f"no such directory: {dest}")
        parent, name = os.path.dirname(dest_abs), os.path.basename(dest_abs)
        if not os.path.isdir(parent):
            raise exits.CLIError(f"no such directory: {parent}")
    from skiff.common import safetar

    root = os.open(parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with streams.reader(chunks) as raw:
            owner = None if args.archive and os.geteuid() == 0 else (os.geteuid(), os.getegid())
            try:
                safetar.extract_tar(root, "/", raw, owner=owner, rename=renamer(name))
            except safetar.CopyError as err:
                raise exits.CLIError(str(err)) from None
    finally:
        os.close(root)
    return 0


def renamer(name: str | None) -> Callable[[str], str | None]:
    """The archive's top entry renamed to ``name``, or dropped (None: its contents only)."""

    def rename(member: str) -> str | None:
        parts = member.lstrip("/").split("/", 1)
        rest = parts[1] if len(parts) > 1 else ""
        if name is None:
            return rest or None
        return f"{name}/{rest}" if rest else name

    return rename


# --- host -> container ---------------------------------------------------------------


def _container_stat(client: Client, container: str, path: str) -> Any:
    from skiff.api.v1 import api_pb2
    from skiff.common.errors import NotFound

    try:
        with client.translated():
            return client.containers.StatContainerPath(
                api_pb2.StatContainerPathRequest(container=container, path=path), timeout=60).stat
    except NotFound as err:
        if err.reason == "CONTAINER_NOT_FOUND":
            raise
        return None


def _to_container(client: Client, src: str, container: str, dest: str, args: argparse.Namespace) -> int:

    dest = dest or "/"
    if not dest.startswith("/"):
        dest = "/" + dest
    if src == "-":
        target = _container_stat(client, container, dest)
        if target is None or not stat.S_ISDIR(target.mode):
            raise exits.CLIError(f"destination \"{container}:{dest}\" must be a directory")
        return _send(client, container, dest, _stdin_chunks(), args)
    local = os.path.abspath(src)
    try:
        lst = os.stat(local) if args.follow_link else os.lstat(local)
    except FileNotFoundError:
        raise exits.CLIError(f"lstat {local}: no such file or directory") from None
    src_is_dir = stat.S_ISDIR(lst.st_mode)
    contents = src.endswith("/.") and src_is_dir
    target = _container_stat(client, container, dest)
    if target is not None and stat.S_ISDIR(target.mode):
        into, name = dest, None if contents else os.path.basename(local.rstrip("/"))
    elif target is not None:
        if src_is_dir:
            raise exits.CLIError(f"cannot copy directory to file: {container}:{dest}")
        into, name = posixpath.dirname(dest.rstrip("/")) or "/", posixpath.basename(dest.rstrip("/"))
    else:
        if dest.endswith("/") and not src_is_dir:
            raise exits.CLIError(f"no such directory: {container}:{dest}")
        into, name = posixpath.dirname(dest.rstrip("/")) or "/", posixpath.basename(dest.rstrip("/"))
    with tempfile.TemporaryFile() as spool:
        with tarfile.open(fileobj=spool, mode="w", format=tarfile.PAX_FORMAT) as tf:
            if name is None:
                for entry in sorted(os.listdir(local)):
                    tf.add(os.path.join(local, entry), arcname=entry, recursive=True)
            elif args.follow_link and not src_is_dir:
                tf.add(os.path.realpath(local), arcname=name, recursive=False)
            else:
                tf.add(local, arcname=name, recursive=True)
        spool.seek(0)
        return _send(client, container, into, iter(lambda: spool.read(CHUNK), b""), args)


def _stdin_chunks() -> Iterator[bytes]:
    return iter(lambda: sys.stdin.buffer.read(CHUNK), b"")


def _send(client: Client, container: str, into: str, chunks: Iterator[bytes], args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2

    def requests() -> Iterator[api_pb2.CopyToContainerRequest]:
        yield api_pb2.CopyToContainerRequest(options=api_pb2.CopyToContainerOptions(
            container=container, path=into, copy_uid_gid=args.archive, no_overwrite_dir_non_dir=True))
        for c in chunks:
            yield api_pb2.CopyToContainerRequest(chunk=c)

    with client.translated():
        client.containers.CopyToContainer(requests())
    return 0
