"""The graph driver: unpacked layers and per-container writable layers.

Lifecycle (as containerd's snapshotter)::

    create_layer_from_archive(tar) -> Layer      # unpack once, content-addressed by DiffID
    prepare(cid, [top, ..., base]) -> Mount      # private writable layer over the chain
    ... the runtime mounts Mount inside the container's mount namespace ...
    release(cid)                                 # drop the writable layer
    remove(layer_id)                             # when no image uses the layer any more

Drivers never mount: ``prepare`` returns a :class:`Mount` description and the
runtime (execsvc) performs it, so a layer store can live in a process that
holds no mounts and survives restarts without leaking them.

Layers are keyed by their DiffID (sha256 of the uncompressed tar). With
overlayfs and with the vfs copy every layer's directory is independent of its
parents, so the DiffID is also a sufficient key for a layer in a chain.

On-disk layout (``<root>`` is the graph root)::

    <root>/<driver>/layers/<hex>/diff          unpacked layer (read-only by convention)
    <root>/<driver>/layers/<hex>/layer.json    {"id": "sha256:<hex>", "size": N}
    <root>/<driver>/containers/<cid>/layers.json  the chain the container was prepared with
    <root>/overlay/containers/<cid>/{diff,work}   overlay upper and work dirs
    <root>/vfs/containers/<cid>/rootfs             vfs: a full copy of the chain
    <root>/<driver>/tmp/                        extraction and deletion staging (same fs: rename is atomic)
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import queue
import re
import shutil
import stat
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from skiff.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from skiff.graphsvc import archive

_LAYER_ID = re.compile(r"^sha256:([0-9a-f]{64})$")
_CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class Layer:
    """An unpacked layer. ``id`` is ``sha256:<hex>`` of its uncompressed tar; ``size`` is content bytes."""

    id: str
    size: int


@dataclass(frozen=True)
class Mount:
    """What the runtime must mount as the container's root (``mount -t type -o options source``)."""

    type: str
    source: str
    options: list[str] = field(default_factory=list)


class LayerStore(Protocol):
    """The graph driver interface graphsvc and its clients use."""

    def create_layer_from_archive(self, stream: IO[bytes], before_commit: Callable[[Layer], None] | None = None
                                  ) -> Layer:
        """Unpack a tar (plain or gzip) safely; idempotent for identical content. ``before_commit``
        runs after the unpacking and before the layer is published; raising there publishes nothing."""
        ...

    def exists(self, layer_id: str) -> bool: ...

    def get(self, layer_id: str) -> Layer:
        """NotFound when absent."""
        ...

    def remove(self, layer_id: str) -> None:
        """NotFound when absent; FailedPrecondition while a prepared container uses it."""
        ...

    def prepare(self, container_id: str, layer_ids: list[str], durable: bool = True) -> Mount:
        """Create the container's writable layer over ``layer_ids`` (top first).

        AlreadyExists if the container is already prepared; NotFound for an unknown layer.
        ``durable=False``: its chain file is not fsynced (the caller keeps the chain elsewhere,
        durably, and restores it with :meth:`restore_chain` after a crash).
        """
        ...

    def restore_chain(self, container_id: str, layer_ids: list[str]) -> bool:
        """After a crash: the container's writable layer made again if it is missing, its chain
        file rewritten (fsynced) if it is missing or torn. True when anything was done."""
        ...

    def release(self, container_id: str) -> None:
        """Remove the container's writable layer; a no-op when it does not exist (idempotent)."""
        ...

    def container_ids(self) -> list[str]:
        """The containers that have a writable layer."""
        ...

    def diff_path(self, layer_id: str) -> Path: ...

    def container_size(self, container_id: str) -> int:
        """Bytes in the container's writable layer."""
        ...

    def layer_ids(self) -> list[str]:
        """Every complete layer."""
        ...

    def users(self, layer_id: str) -> list[str]:
        """Containers whose root filesystem stacks the layer."""
        ...


def layer_hex(layer_id: str) -> str:
    m = _LAYER_ID.match(layer_id)
    if not m:
        raise InvalidArgument(f"invalid layer id {layer_id!r}: expected sha256:<64 hex>")
    return m.group(1)


def _check_container_id(container_id: str) -> None:
    if not _CONTAINER_ID.match(container_id):
        raise InvalidArgument(f"invalid container id {container_id!r}")


_libc = ctypes.CDLL(None, use_errno=True)


def _syncfs(path: Path) -> None:
    """syncfs(2) of the file system holding ``path``: every file written there reaches the disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)


FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_TOPDIR_FL = 0x00020000


def set_topdir(path: Path) -> bool:
    """Mark ``path`` a "top directory" (``chattr +T``), best effort.

    ext4's Orlov allocator then places each directory made in it (a layer's staging directory,
    renamed into layers/ later) in a block group of its own choosing, with free inodes and few
    directories, instead of next to its siblings. A layer is an independent tree, which is what
    the flag is for; and it keeps a new layer's inodes away from the group where the last removed
    layers' inodes were freed: without a journal, ext4 skips inodes freed in the last 30 s one by
    one, which made every file creation of a pull right after an rmi cost ~0.5 ms instead of ~20 us.
    Other file systems ignore or refuse the flag; either is fine.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        buf = bytearray(4)
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf)
        flags = int.from_bytes(buf, "little")
        if not flags & FS_TOPDIR_FL:
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, (flags | FS_TOPDIR_FL).to_bytes(4, "little"))
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _replace(path: Path, data: bytes) -> None:
    """Written whole or not at all for the processes (a temp file renamed), not fsynced."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _fsync_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class _BaseDriver:
    """Layer storage shared by every driver; subclasses differ only in prepare/release."""

    name = "base"

    def __init__(
        self,
        root: Path | str,
        *,
        max_bytes: int = archive.DEFAULT_MAX_BYTES,
        max_entries: int = archive.DEFAULT_MAX_ENTRIES,
    ):
        self.home = Path(root) / self.name
        self.layers_dir = self.home / "layers"
        self.containers_dir = self.home / "containers"
        self.tmp_dir = self.home / "tmp"
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        for d in (self.layers_dir, self.containers_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        set_topdir(self.tmp_dir)
        # Staging left behind by a crash is garbage by construction.
        for leftover in self.tmp_dir.iterdir():
            shutil.rmtree(leftover, ignore_errors=True)

    # -- layers -------------------------------------------------------------

    def create_layer_from_archive(self, stream: IO[bytes] | Path | str,
                                  before_commit: Callable[[Layer], None] | None = None) -> Layer:
        staging = Path(os.path.join(self.tmp_dir, "import-" + uuid.uuid4().hex))
        staging.mkdir(mode=0o700)
        try:
            diff = staging / "diff"
            diff.mkdir(mode=0o755)
            stats = archive.extract(stream, diff, max_bytes=self.max_bytes, max_entries=self.max_entries)
            layer = Layer(id=stats.diff_id, size=stats.size)
            if before_commit is not None:
                before_commit(layer)  # e.g. the blob's digest check of a pull that streams
            # One syncfs for the whole tree (no fsync per file): the layer is on disk before its
            # rename publishes it, so a crash never leaves a published, half-written layer.
            _syncfs(staging)
            _fsync_write(staging / "layer.json", json.dumps({"id": layer.id, "size": layer.size}).encode())
            final = self.layers_dir / layer_hex(layer.id)
            try:
                os.rename(staging, final)
            except OSError:
                if final.is_dir():  # same content already unpacked (or a concurrent import won)
                    return self.get(layer.id)
                raise
            return layer
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _layer_dir(self, layer_id: str) -> Path:
        return self.layers_dir / layer_hex(layer_id)

    def exists(self, layer_id: str) -> bool:
        return (self._layer_dir(layer_id) / "layer.json").is_file()

    def get(self, layer_id: str) -> Layer:
        try:
            meta = json.loads((self._layer_dir(layer_id) / "layer.json").read_bytes())
        except FileNotFoundError:
            raise NotFound(f"layer {layer_id} not found") from None
        return Layer(id=meta["id"], size=int(meta["size"]))

    def diff_path(self, layer_id: str) -> Path:
        if not self.exists(layer_id):
            raise NotFound(f"layer {layer_id} not found")
        return self._layer_dir(layer_id) / "diff"

    def remove(self, layer_id: str) -> None:
        if not self.exists(layer_id):
            raise NotFound(f"layer {layer_id} not found")
        users = self._layer_users(layer_id)
        if users:
            raise FailedPrecondition(f"layer {layer_id} is in use by container {users[0]}")
        self._discard(self._layer_dir(layer_id))

    def _discard(self, path: Path) -> None:
        """Rename into tmp first so a crash never leaves a half-deleted layer in place."""
        grave = self.tmp_dir / ("rm-" + uuid.uuid4().hex)
        os.rename(path, grave)
        shutil.rmtree(grave)

    # -- containers ---------------------------------------------------------

    def layer_ids(self) -> list[str]:
        return sorted("sha256:" + d.name for d in self.layers_dir.iterdir() if (d / "layer.json").is_file())

    def users(self, layer_id: str) -> list[str]:
        return self._layer_users(layer_id)

    def _layer_users(self, layer_id: str) -> list[str]:
        users = []
        for cdir in sorted(self.containers_dir.iterdir()):
            try:
                chain = json.loads((cdir / "layers.json").read_bytes())
            except (FileNotFoundError, ValueError):
                continue
            if layer_id in chain:
                users.append(cdir.name)
        return users

    def restore_chain(self, container_id: str, layer_ids: list[str]) -> bool:
        _check_container_id(container_id)
        cdir = self.containers_dir / container_id
        if not cdir.is_dir():
            self.prepare(container_id, layer_ids)  # type: ignore[attr-defined]
            return True
        try:
            if json.loads((cdir / "layers.json").read_bytes()) == list(layer_ids):
                return False
        except (FileNotFoundError, ValueError):
            pass
        _fsync_write(cdir / "layers.json", json.dumps(list(layer_ids)).encode())
        return True

    def _begin_prepare(self, container_id: str, layer_ids: list[str], durable: bool = True) -> Path:
        _check_container_id(container_id)
        if not layer_ids:
            raise InvalidArgument("prepare needs at least one layer")
        for lid in layer_ids:
            if not self.exists(lid):
                raise NotFound(f"layer {lid} not found")
        cdir = self.containers_dir / container_id
        try:
            cdir.mkdir(mode=0o700)
        except FileExistsError:
            raise AlreadyExists(f"container {container_id} already has a root filesystem") from None
        if durable:
            _fsync_write(cdir / "layers.json", json.dumps(list(layer_ids)).encode())
        else:
            _replace(cdir / "layers.json", json.dumps(list(layer_ids)).encode())
        return cdir

    def release(self, container_id: str) -> None:
        """The layer leaves its place at once (a rename); its files are deleted by a background
        thread (rmdir/unlink are ~0.5 ms each on a filesystem mounted with ``discard``), or at
        the next start-up if the process ends first (tmp is emptied then)."""
        _check_container_id(container_id)
        cdir = self.containers_dir / container_id
        if cdir.exists():
            grave = self.tmp_dir / ("rm-" + uuid.uuid4().hex)
            os.rename(cdir, grave)
            _reap_later(grave)

    def container_ids(self) -> list[str]:
        return sorted(d.name for d in self.containers_dir.iterdir())

    def container_size(self, container_id: str) -> int:
        """Bytes the container's writable layer holds (0 when it has none)."""
        _check_container_id(container_id)
        return tree_size(self.containers_dir / container_id / "diff")


_graves: queue.SimpleQueue[Path] = queue.SimpleQueue()
_reaper_lock = threading.Lock()
_reaper: threading.Thread | None = None


def _reap_later(grave: Path) -> None:
    """Delete ``grave`` (already out of its place) in the one background reaper thread."""
    global _reaper
    _graves.put(grave)
    with _reaper_lock:
        if _reaper is None:
            _reaper = threading.Thread(target=_reap, name="layer-reaper", daemon=True)
            _reaper.start()


def _reap() -> None:
    while True:
        shutil.rmtree(_graves.get(), ignore_errors=True)


class OverlayDriver(_BaseDriver):
    """overlayfs: each layer is a lowerdir, the container gets its own upperdir and workdir."""

    name = "overlay"

    def __init__(self, root: Path | str, **kw: int):
        super().__init__(root, **kw)
        # overlay's option string is split on ',' and lowerdir on ':'.
        if any(c in str(self.home) for c in ",:"):
            raise InvalidArgument(f"graph root {self.home} must not contain ',' or ':' for overlayfs")

    def prepare(self, container_id: str, layer_ids: list[str], durable: bool = True) -> Mount:
        cdir = self._begin_prepare(container_id, layer_ids, durable)
        (cdir / "diff").mkdir(mode=0o755)
        (cdir / "work").mkdir(mode=0o700)
        lower = ":".join(str(self.diff_path(lid)) for lid in layer_ids)
        return Mount(
            type="overlay",
            source="overlay",
            options=[f"lowerdir={lower}", f"upperdir={cdir / 'diff'}", f"workdir={cdir / 'work'}"],
        )


class VfsDriver(_BaseDriver):
    """Copies the chain into a plain directory: needs no kernel feature, costs a full copy per container."""

    name = "vfs"

    def prepare(self, container_id: str, layer_ids: list[str], durable: bool = True) -> Mount:
        cdir = self._begin_prepare(container_id, layer_ids, durable)
        rootfs = cdir / "rootfs"
        try:
            rootfs.mkdir(mode=0o755)
            for lid in reversed(layer_ids):  # base first
                apply_layer(self.diff_path(lid), rootfs)
        except BaseException:
            self._discard(cdir)
            raise
        return Mount(type="bind", source=str(rootfs), options=["rbind", "rw"])

    def container_size(self, container_id: str) -> int:
        """A full copy: what it holds beyond its layers (an estimate; vfs keeps no separate diff)."""
        _check_container_id(container_id)
        cdir = self.containers_dir / container_id
        try:
            chain = json.loads((cdir / "layers.json").read_bytes())
        except (FileNotFoundError, ValueError):
            return 0
        base = sum(tree_size(self.diff_path(lid)) for lid in chain if self.exists(lid))
        return max(tree_size(cdir / "rootfs") - base, 0)


def tree_size(top: Path) -> int:
    """Bytes of the files and symlinks under ``top`` (lstat sizes, each inode once); 0 if absent."""
    total, seen = 0, set()
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode) or (st.st_ino, st.st_dev) in seen:
                continue
            seen.add((st.st_ino, st.st_dev))
            total += st.st_size
    return total


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _remove_any(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def apply_layer(diff: Path, target: Path) -> None:
    """Merge an unpacked (overlay-format) layer onto ``target`` the way overlayfs would show it.

    Whiteouts delete, opaque directories hide what was below. ``target`` is
    our own directory, built only from checked layers, and walking uses
    lstat semantics, so no link is followed.
    """
    for dirpath, dirnames, filenames in os.walk(diff):
        rel = Path(dirpath).relative_to(diff)
        tdir = target / rel
        for name in list(dirnames) + filenames:
            src = Path(dirpath) / name
            dst = tdir / name
            st = src.lstat()
            if _is_whiteout(st):
                _remove_any(dst)
                continue
            if stat.S_ISDIR(st.st_mode):
                opaque = _get_opaque(src)
                if dst.is_symlink() or (dst.exists() and not dst.is_dir()) or (opaque and dst.exists()):
                    _remove_any(dst)
                if not dst.exists():
                    dst.mkdir()
                shutil.copystat(src, dst, follow_symlinks=False)
                os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
                os.chmod(dst, stat.S_IMODE(st.st_mode))
                continue
            _remove_any(dst)
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(src), dst)
            elif stat.S_ISFIFO(st.st_mode):
                os.mkfifo(dst, stat.S_IMODE(st.st_mode))
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                os.mknod(dst, stat.S_IFMT(st.st_mode) | stat.S_IMODE(st.st_mode), st.st_rdev)  # never opened
            else:
                shutil.copy2(src, dst, follow_symlinks=False)
            os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
            if not stat.S_ISLNK(st.st_mode):
                os.chmod(dst, stat.S_IMODE(st.st_mode))  # after chown, which clears setuid
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        # os.walk does not descend into symlinked dirs (followlinks=False).
    for dirpath, _dirnames, _filenames in os.walk(diff):
        rel = Path(dirpath).relative_to(diff)
        st = Path(dirpath).lstat()
        os.utime(target / rel, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _get_opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, archive.OVERLAY_OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False
