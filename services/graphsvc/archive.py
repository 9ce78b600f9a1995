"""Safe extraction of layer tarballs.

A layer tarball is untrusted input: it may come from any registry or any
``skiff import``. Extraction therefore never trusts a member path and never
follows a link that is already on disk:

* every member path is normalised lexically; absolute paths and ``..`` that
  climb above the layer root are rejected;
* parents are opened one component at a time with ``O_NOFOLLOW |
  O_DIRECTORY`` relative to the parent's descriptor (``openat`` walking), so a
  member that goes *through* a symlink fails instead of escaping, whatever
  earlier members planted;
* symlink targets are checked as Docker does (``breakoutError``): an absolute
  target is read against the layer root (that is how the kernel resolves it
  inside the container), a relative one against the link's directory, and
  either is rejected when it climbs above the root. The target is never
  followed during extraction;
* hardlinks must name a member already extracted from this archive;
* char/block devices and fifos are allowed, as the OCI layer format says
  (``mknod``, so devices need root; a node in an image gives a container no
  access by itself: the device cgroup decides what it may open);
  ``trusted.*`` and ``security.*`` xattrs (other than
  ``security.capability``) are rejected;
* decompressed bytes and entry count are capped, so a decompression bomb fails
  cleanly (gzip and zstd alike: the cap counts what the decompressor yields).

Any violation raises :class:`InvalidArgument` with reason ``UNSAFE_ARCHIVE``
naming the member. The caller extracts into a fresh temporary directory and
removes it on failure; :func:`extract` itself writes nothing outside ``dest``.

OCI whiteouts are translated to overlayfs' on-disk form while extracting:
``.wh.<name>`` becomes a 0:0 char device ``<name>`` and ``.wh..wh..opq``
becomes ``trusted.overlay.opaque=y`` on its directory.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import posixpath
import queue
import shutil
import stat
import tarfile
import threading
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

import zstandard

from skiff.common.errors import UNSAFE_ARCHIVE, InvalidArgument

_zlib: Any = zlib
_ZLIB_ERRORS: tuple[type[BaseException], ...] = (zlib.error,)
try:  # ISA-L's inflate: about twice zlib's speed, the same format and checks
    from isal import isal_zlib

    _zlib = isal_zlib
    _ZLIB_ERRORS = (zlib.error, isal_zlib.error)  # type: ignore[assignment]
except ImportError:  # pragma: no cover - isal is optional
    pass


#: Default caps; callers pass their own. 8 GiB of tar, 1M entries.
DEFAULT_MAX_BYTES = 8 << 30
DEFAULT_MAX_ENTRIES = 1_000_000

WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"

_CHUNK = 1 << 20
#: Directory descriptors an extraction keeps open at most (the open-file limit is shared).
_MAX_DIR_FDS = 256
#: Regular files up to this size are written by ``_WRITERS`` threads, at most ``_MAX_PENDING``
#: of them (``_MAX_PENDING_BYTES`` of content) queued at a time.
_SMALL_FILE = 1 << 20
_WRITERS = 4
_MAX_PENDING = 256
_MAX_PENDING_BYTES = 32 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ALLOWED_SECURITY_XATTRS = {"security.capability"}
_XATTR_PAX_PREFIX = "SCHILY.xattr."


@dataclass(frozen=True)
class ExtractStats:
    """What an extraction produced.

    ``diff_id`` is the sha256 of the *uncompressed* tar stream (the OCI
    DiffID), computed while reading so the layer is hashed and unpacked in one
    pass. ``size`` is the bytes of file content written.
    """

    diff_id: str
    entries: int
    tar_bytes: int
    size: int


def unsafe(member: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"unsafe layer archive: member {member!r}: {why}", reason=UNSAFE_ARCHIVE)


class _Prefixed:
    """A read-only stream that replays bytes already peeked from ``raw``.

    Needed because magic-byte detection must work on non-seekable streams.
    """

    def __init__(self, prefix: bytes, raw: IO[bytes]):
        self._prefix = prefix
        self._raw = raw

    def read(self, n: int = -1) -> bytes:
        if self._prefix:
            if n < 0:
                data, self._prefix = self._prefix + self._raw.read(), b""
                return data
            data, self._prefix = self._prefix[:n], self._prefix[n:]
            if len(data) < n:
                data += self._raw.read(n - len(data))
            return data
        return self._raw.read(n)


class _TooBig(Exception):
    """Raised inside tarfile's reads; turned into UNSAFE_ARCHIVE naming the member."""


class _HashingCappedReader:
    """Hashes and counts the uncompressed tar bytes; enforces ``max_bytes``.

    Sits between the (de)compressor and :mod:`tarfile`, so the cap applies
    to what a gzip bomb would expand to, not to the compressed input.
    """

    def __init__(self, raw: IO[bytes] | _Prefixed, max_bytes: int):
        self._raw = raw
        self._max = max_bytes
        self.count = 0
        self.digest = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        # Never ask for more than one byte past the cap: unbounded reads of a
        # bomb would allocate the whole expansion before we could refuse it.
        budget = self._max - self.count + 1
        n = budget if n is None or n < 0 else min(n, budget)
        data = self._raw.read(n)
        self.count += len(data)
        if self.count > self._max:
            raise _TooBig(self._max)
        self.digest.update(data)
        return data

    def drain(self) -> None:
        """Read to EOF so the digest covers the tar's trailing padding too."""
        while self.read(_CHUNK):
            pass


class _GzipStream:
    """A gzip stream (one or more members, NUL padding between them tolerated) decompressed by a
    thread of its own into a short queue, read here as a file.

    The decompressor (ISA-L's when ``isal`` is installed, zlib's otherwise; both check each
    member's CRC-32 and length) never yields more than ``_CHUNK`` bytes per call and the queue
    holds at most ``_QUEUE`` chunks, so a bomb costs bounded memory; the cap on the total is the
    reader's above. The thread also does the reading of the source (for a pull: the network, the
    blob's file and its sha256), so all of that runs beside the tar parsing and the file writes.
    """

    _QUEUE = 8

    def __init__(self, raw: IO[bytes] | _Prefixed):
        self._raw = raw
        self._q: queue.Queue[bytes | BaseException | None] = queue.Queue(self._QUEUE)
        self._buf = memoryview(b"")
        self._done = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gunzip", daemon=True)
        self._thread.start()

    def _chunks(self) -> Iterator[bytes]:
        d = _zlib.decompressobj(31)
        data = b""
        started = False
        while True:
            if d.unconsumed_tail:
                data = d.unconsumed_tail
            elif not data:
                data = self._raw.read(_CHUNK)
                if not data:
                    if started and not d.eof:
                        raise EOFError("compressed file ended before the end-of-stream marker was reached")
                    return
            started = True
            out = d.decompress(data, _CHUNK)
            data = b""
            if out:
                yield out
            if d.eof:
                rest = d.unused_data.lstrip(b"\0")
                while not rest:  # NUL padding after a member, then EOF or the next member
                    more = self._raw.read(_CHUNK)
                    if not more:
                        return
                    rest = more.lstrip(b"\0")
                if rest[:2] != _GZIP_MAGIC and len(rest) >= 2:
                    raise gzip.BadGzipFile("trailing garbage after the gzip stream")
                d = _zlib.decompressobj(31)
                data, started = rest, False

    def _put(self, item: bytes | BaseException | None) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for chunk in self._chunks():
                if not self._put(chunk):
                    return
            self._put(None)
        except BaseException as err:  # re-raised in the reader's thread
            self._put(err)

    def read(self, n: int = -1) -> bytes:
        while not self._buf:
            if self._done:
                return b""
            item = self._q.get()
            if item is None:
                self._done = True
                return b""
            if isinstance(item, BaseException):
                self._done = True
                if isinstance(item, _ZLIB_ERRORS):
                    raise zlib.error(str(item)) from item
                raise item
            self._buf = memoryview(item)
        if n is None or n < 0 or n >= len(self._buf):
            data, self._buf = bytes(self._buf), memoryview(b"")
        else:
            data, self._buf = bytes(self._buf[:n]), self._buf[n:]
        return data

    def close(self) -> None:
        """Stop the thread (it may be blocked on a full queue) and wait for it."""
        self._stop.set()
        while True:
            try:
                self._q.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=60)


def _open_stream(src: BinaryIO | IO[bytes] | Path | str, max_bytes: int) -> tuple[_HashingCappedReader, list]:
    """Return a capped, hashing reader of the uncompressed tar, plus things to close."""
    closers: list = []
    raw: IO[bytes]
    if isinstance(src, (str, Path)):
        raw = open(src, "rb")  # noqa: SIM115 - closed by the caller through closers
        closers.append(raw)
    else:
        raw = src
    magic = b""
    while len(magic) < 4:  # a pipe may return short reads
        more = raw.read(4 - len(magic))
        if not more:
            break
        magic += more
    prefixed = _Prefixed(magic, raw)
    if magic[:2] == _GZIP_MAGIC:
        gz = _GzipStream(prefixed)
        closers.append(gz)
        return _HashingCappedReader(gz, max_bytes), closers  # type: ignore[arg-type]
    if magic == _ZSTD_MAGIC:
        # A streaming reader: memory stays bounded whatever the frame claims its size is.
        zst = zstandard.ZstdDecompressor().stream_reader(prefixed, read_across_frames=True)  # type: ignore[arg-type]
        closers.append(zst)
        return _HashingCappedReader(zst, max_bytes), closers
    return _HashingCappedReader(prefixed, max_bytes), closers


def normalize_member_path(name: str, member: str | None = None) -> str:
    """Lexically normalise a member name; ``"."`` is the layer root.

    A leading ``./`` is ordinary (``tar -C root .`` produces it); a leading
    ``/`` and any ``..`` that climbs above the root are refused.
    """
    who = name if member is None else member
    what = "path" if member is None else f"hardlink target {name!r}"
    if not name or "\x00" in name:
        raise unsafe(who, f"{what}: empty or NUL in path")
    if name.startswith("/"):
        raise unsafe(who, f"{what}: absolute path")
    norm = posixpath.normpath(name)
    if norm == ".." or norm.startswith("../") or norm.startswith("/"):
        raise unsafe(who, f"{what}: escapes the layer root")
    return norm


def check_symlink_target(member: str, path: str, target: str) -> None:
    """Reject a symlink whose target climbs above the layer root.

    An absolute target is resolved against the layer root (as the kernel
    does inside the container's root), so ``/etc`` is fine and ``/../..``
    normalises to ``/``. A relative target is joined to the link's directory.
    """
    if not target or "\x00" in target:
        raise unsafe(member, "empty symlink target")
    if target.startswith("/"):
        return
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    if joined == ".." or joined.startswith("../"):
        raise unsafe(member, f"symlink target {target!r} points outside the layer")


class _Extractor:
    """Applies members one by one below ``root_fd`` without following links.

    Directory descriptors opened while walking are kept (by path relative to the root) so that a
    member's parent is not walked again from the root each time; a directory that is removed or
    replaced drops its entry and every entry below it, so a kept descriptor always names the
    directory now at that path.
    """

    def __init__(self, root_fd: int):
        self.root_fd = root_fd
        self.is_root = os.geteuid() == 0
        self.extracted: set[str] = {"."}
        self.dir_times: list[tuple[str, int]] = []
        self.size = 0
        self._dirs: dict[str, int] = {}
        # Small regular files at paths not made before in this archive are written by a few
        # threads: creating an inode mostly waits on the file system, and waits overlap. Members
        # are still applied in order: any member whose path (or a parent) is pending, any
        # replacement, hardlink or whiteout waits for the writes it could race with.
        self._made: set[str] = set()  # every path created so far (explicit or implicit parent)
        self._pending: dict[str, Future[None]] = {}
        self._pending_bytes = 0
        self._pool: ThreadPoolExecutor | None = None

    def close(self) -> None:
        self.wait_all(raise_errors=False)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.close_dirs()

    def close_dirs(self) -> None:
        """Drop every kept directory descriptor (pending writes use them: wait for those first)."""
        self.wait_all()
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()

    def wait_all(self, raise_errors: bool = True) -> None:
        """Every pending write done; the first error (if any) raised."""
        first: BaseException | None = None
        for fut in self._pending.values():
            try:
                fut.result()
            except BaseException as err:  # re-raised below, after every write ended
                first = first or err
        self._pending.clear()
        self._pending_bytes = 0
        if first is not None and raise_errors:
            raise first

    def _wait_for(self, rel: str) -> None:
        fut = self._pending.pop(rel, None)
        if fut is not None:
            fut.result()

    def _write_later(self, pfd: int, base: str, rel: str, m: tarfile.TarInfo, data: bytes,
                     xattrs: dict[str, bytes]) -> None:
        if self._pending_bytes + len(data) > _MAX_PENDING_BYTES or len(self._pending) >= _MAX_PENDING:
            self.wait_all()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(_WRITERS, thread_name_prefix="untar")
        # ``pfd`` is a kept descriptor (or the root's): none is closed while writes are pending.
        fut = self._pool.submit(self._write_file, pfd, base, m, data, xattrs)
        self._pending[rel] = fut
        self._pending_bytes += len(data)

    def _write_file(self, dfd: int, base: str, m: tarfile.TarInfo, data: bytes, xattrs: dict[str, bytes]) -> None:
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            self.set_fd_meta(m, fd, xattrs)
            os.utime(fd, ns=(int(m.mtime) * 10**9, int(m.mtime) * 10**9))
        finally:
            os.close(fd)

    def _forget(self, rel: str) -> None:
        """``rel`` (a directory) is gone: drop its descriptor and those below it."""
        self.wait_all()
        below = rel + "/"
        for key in [k for k in self._dirs if k == rel or k.startswith(below)]:
            os.close(self._dirs.pop(key))

    def _keep(self, rel: str, fd: int) -> None:
        old = self._dirs.pop(rel, None)
        if old is not None:
            self.wait_all()
            os.close(old)
        self._dirs[rel] = fd

    # -- walking ---------------------------------------------------------

    def open_dir(self, member: str, rel: str, *, create: bool) -> int:
        """Directory ``rel`` (relative to the root), opened without following links.

        Missing parents are created (0755, like Docker) when ``create``; a component that is a
        symlink or not a directory is refused. The descriptor is borrowed: valid until the next
        member is applied; never close it.
        """
        if rel in ("", "."):
            return self.root_fd
        fd = self._dirs.get(rel)
        if fd is not None:
            return fd
        self._wait_for(rel)  # a file being written there: it must exist (and be refused) first
        parent, comp = posixpath.split(rel)
        pfd = self.open_dir(member, parent, create=create)
        try:
            nfd = os.open(comp, _DIR_FLAGS, dir_fd=pfd)
        except FileNotFoundError:
            if not create:
                raise
            os.mkdir(comp, 0o755, dir_fd=pfd)
            self._made.add(rel)
            nfd = os.open(comp, _DIR_FLAGS, dir_fd=pfd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                why = f"path goes through a symlink or non-directory at {comp!r}"
                raise unsafe(member, why) from None
            raise
        self._keep(rel, nfd)
        return nfd

    # -- members ----------------------------------------------------------

    def apply(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        if len(self._dirs) > _MAX_DIR_FDS:
            self.close_dirs()
        path = normalize_member_path(m.name)
        xattrs = self.xattrs(m)
        parent_rel, base = posixpath.split(path) if path != "." else ("", ".")

        if base == OPAQUE_WHITEOUT:
            self.opaque(m.name, parent_rel)
            return
        if base.startswith(WHITEOUT_PREFIX):
            self.whiteout(m.name, parent_rel, base[len(WHITEOUT_PREFIX):])
            return
        if path == ".":
            if not m.isdir():
                raise unsafe(m.name, "layer root must be a directory")
            self.set_dir_meta(m, self.root_fd, xattrs)
            self.dir_times.append((".", int(m.mtime)))
            return

        self._wait_for(path)  # an earlier member of the same name is written before this one
        pfd = self.open_dir(m.name, parent_rel, create=True)
        if m.isreg() and path not in self._made and m.size <= _SMALL_FILE:
            src = tf.extractfile(m)
            data = src.read() if src is not None else b""
            self.size += len(data)
            self._made.add(path)
            self._write_later(pfd, base, path, m, data, xattrs)
            self.extracted.add(path)
            return
        self._made.add(path)
        if m.isdir():
            self.make_dir(m, pfd, base, path, xattrs)
            self.dir_times.append((path, int(m.mtime)))
        elif m.isreg():
            self.make_file(tf, m, pfd, base, path, xattrs)
        elif m.issym():
            check_symlink_target(m.name, path, m.linkname)
            self.create(pfd, base, path, lambda: os.symlink(m.linkname, base, dir_fd=pfd))
            self.set_link_meta(m, pfd, base)
        elif m.islnk():
            self.make_hardlink(m, pfd, base, path)
        elif m.isfifo():
            self.create(pfd, base, path, lambda: os.mkfifo(base, 0o600, dir_fd=pfd))
            self.set_path_meta(m, pfd, base)
        elif m.ischr() and m.devmajor == 0 and m.devminor == 0:
            # An already-converted overlay whiteout (some exporters write these).
            self.create(pfd, base, path, lambda: self.mknod_whiteout(m.name, pfd, base))
        elif m.ischr() or m.isblk():
            self.create(pfd, base, path, lambda: self.mknod_device(m, pfd, base))
            self.set_path_meta(m, pfd, base)
        else:
            raise unsafe(m.name, f"unsupported tar member type {m.type!r}")
        self.extracted.add(path)

    def xattrs(self, m: tarfile.TarInfo) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for key, value in m.pax_headers.items():
            if not key.startswith(_XATTR_PAX_PREFIX):
                continue
            name = key[len(_XATTR_PAX_PREFIX):]
            if name.startswith("trusted.") or (
                name.startswith("security.") and name not in _ALLOWED_SECURITY_XATTRS
            ):
                raise unsafe(m.name, f"xattr {name!r} is not allowed")
            out[name] = value.encode("utf-8", "surrogateescape")
        return out

    def replace(self, pfd: int, base: str, rel: str) -> None:
        """Remove whatever is at ``base`` so a later member wins, as in tar."""
        if self._pending:
            self.wait_all()  # nothing may be written where (or below where) things are removed
        try:
            st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            self._forget(rel)
            shutil.rmtree(base, dir_fd=pfd)
        else:
            os.unlink(base, dir_fd=pfd)

    def create(self, pfd: int, base: str, rel: str, make: Callable[[], object]) -> None:
        """``make()`` the new node; if something is there already, replace it (a later member wins)."""
        try:
            make()
        except FileExistsError:
            self.replace(pfd, base, rel)
            make()

    def make_dir(self, m: tarfile.TarInfo, pfd: int, base: str, rel: str, xattrs: dict[str, bytes]) -> None:
        try:
            os.mkdir(base, 0o700, dir_fd=pfd)
        except FileExistsError:
            st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                self.replace(pfd, base, rel)
                os.mkdir(base, 0o700, dir_fd=pfd)
        fd = self._dirs.get(rel)
        if fd is None:
            fd = os.open(base, _DIR_FLAGS, dir_fd=pfd)
            self._keep(rel, fd)
        self.set_dir_meta(m, fd, xattrs)

    def make_file(
        self, tf: tarfile.TarFile, m: tarfile.TarInfo, pfd: int, base: str, rel: str, xattrs: dict[str, bytes]
    ) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(base, flags, 0o600, dir_fd=pfd)
        except FileExistsError:
            self.replace(pfd, base, rel)
            fd = os.open(base, flags, 0o600, dir_fd=pfd)
        try:
            src = tf.extractfile(m)
            if src is not None:
                while chunk := src.read(_CHUNK):
                    os.write(fd, chunk)
                    self.size += len(chunk)
            self.set_fd_meta(m, fd, xattrs)
            os.utime(fd, ns=(int(m.mtime) * 10**9, int(m.mtime) * 10**9))
        finally:
            os.close(fd)

    def make_hardlink(self, m: tarfile.TarInfo, pfd: int, base: str, rel: str) -> None:
        target = normalize_member_path(m.linkname, m.name)
        if target not in self.extracted or target == ".":
            raise unsafe(m.name, f"hardlink target {m.linkname!r} is not an earlier member of this layer")
        self._wait_for(target)
        tparent, tbase = posixpath.split(target)
        tfd = self.open_dir(m.name, tparent, create=False)
        st = os.stat(tbase, dir_fd=tfd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            raise unsafe(m.name, "hardlink to a directory")
        self.create(pfd, base, rel,
                    lambda: os.link(tbase, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False))

    def whiteout(self, member: str, parent_rel: str, name: str) -> None:
        if not name or name in (".", "..") or "/" in name:
            raise unsafe(member, "invalid whiteout name")
        pfd = self.open_dir(member, parent_rel, create=True)
        rel = posixpath.join(parent_rel, name) if parent_rel else name
        self.replace(pfd, name, rel)
        self._made.add(rel)
        self.mknod_whiteout(member, pfd, name)
        self.extracted.add(rel)

    def mknod_whiteout(self, member: str, pfd: int, name: str) -> None:
        try:
            os.mknod(name, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)
        except PermissionError:
            raise unsafe(member, "whiteouts need CAP_MKNOD (run as root)") from None

    def mknod_device(self, m: tarfile.TarInfo, pfd: int, base: str) -> None:
        kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
        try:
            os.mknod(base, kind | 0o600, os.makedev(m.devmajor, m.devminor), dir_fd=pfd)
        except PermissionError:
            raise unsafe(m.name, "device nodes need CAP_MKNOD (run as root)") from None

    def opaque(self, member: str, parent_rel: str) -> None:
        fd = self.open_dir(member, parent_rel, create=True)
        try:
            os.setxattr(fd, OVERLAY_OPAQUE_XATTR, b"y")
        except PermissionError:
            raise unsafe(member, "opaque whiteouts need CAP_SYS_ADMIN (run as root)") from None

    # -- metadata ---------------------------------------------------------

    def set_fd_meta(self, m: tarfile.TarInfo, fd: int, xattrs: dict[str, bytes]) -> None:
        # chown before chmod: chown clears setuid/setgid bits.
        if self.is_root:
            os.fchown(fd, m.uid, m.gid)
        os.fchmod(fd, m.mode & 0o7777)
        for k, v in xattrs.items():
            os.setxattr(fd, k, v)

    def set_dir_meta(self, m: tarfile.TarInfo, fd: int, xattrs: dict[str, bytes]) -> None:
        self.set_fd_meta(m, fd, xattrs)

    def set_path_meta(self, m: tarfile.TarInfo, pfd: int, base: str) -> None:
        """Metadata for nodes we cannot open (fifos): by name, never following links."""
        if self.is_root:
            os.chown(base, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
        st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(base, m.mode & 0o7777, dir_fd=pfd)
        mt = int(m.mtime) * 10**9
        os.utime(base, ns=(mt, mt), dir_fd=pfd, follow_symlinks=False)

    def set_link_meta(self, m: tarfile.TarInfo, pfd: int, base: str) -> None:
        if self.is_root:
            os.chown(base, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
        mt = int(m.mtime) * 10**9
        os.utime(base, ns=(mt, mt), dir_fd=pfd, follow_symlinks=False)

    def finish(self) -> None:
        """Directory mtimes last: creating children would bump them."""
        for rel, mtime in reversed(self.dir_times):
            if len(self._dirs) > _MAX_DIR_FDS:
                self.close_dirs()
            try:
                fd = self.open_dir(rel, rel, create=False)
            except (OSError, InvalidArgument):
                continue  # replaced by a later member
            os.utime(fd, ns=(mtime * 10**9, mtime * 10**9))


def extract(
    src: BinaryIO | IO[bytes] | Path | str,
    dest: Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_entries: int = DEFAULT_MAX_ENTRIES,
) -> ExtractStats:
    """Unpack a plain, gzip or zstd tar (file path or stream) into the existing directory ``dest``.

    Raises :class:`InvalidArgument` (reason ``UNSAFE_ARCHIVE``) on any unsafe
    or malformed member; ``dest`` is then left partially filled and the caller
    must remove it.
    """
    reader, closers = _open_stream(src, max_bytes)
    root_fd = os.open(dest, _DIR_FLAGS)
    ex = _Extractor(root_fd)
    entries = 0
    current = "<stream>"
    try:
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tf:  # type: ignore[call-overload]
                for member in tf:
                    current = member.name
                    entries += 1
                    if entries > max_entries:
                        raise unsafe(member.name, f"more than {max_entries} entries")
                    ex.apply(tf, member)
            ex.wait_all()
            reader.drain()
        except _TooBig as e:
            raise unsafe(current, f"uncompressed size exceeds the limit of {e.args[0]} bytes") from None
        except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error, zstandard.ZstdError, OSError) as e:
            if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                raise
            raise unsafe(current, f"cannot extract: {e}") from e
        ex.finish()
    finally:
        ex.close()
        os.close(root_fd)
        for c in reversed(closers):
            c.close()
    return ExtractStats(
        diff_id="sha256:" + reader.digest.hexdigest(),
        entries=entries,
        tar_bytes=reader.count,
        size=ex.size,
    )
