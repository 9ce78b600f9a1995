"""Tar in and out of a directory tree that must be treated as a root (``skiff cp``).

Every path is resolved with ``openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)``
against a directory fd: ``..`` stops at the root and a symlink, absolute or
relative, is followed *inside* it, so no name in the tree, and no entry in an
archive, reaches anything outside. Every change is then made with ``*at``
calls on the resolved parent's fd and the last component's name
(``O_NOFOLLOW``), so a symlink swapped in meanwhile is never followed either.

stdlib only: the cp helper (``python -I -S``) imports this file by path, and so
does the CLI for the host side. No user or group names are looked up
(``pwd``/``grp`` would load NSS modules); archives carry numeric ids.
"""

from __future__ import annotations

import ctypes
import errno
import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Callable
from typing import IO, Any

_SYS_OPENAT2 = 437  # x86_64 and aarch64
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
O_PATH = 0o10000000
CHUNK = 1 << 20

_libc = ctypes.CDLL(None, use_errno=True)


class OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class CopyError(Exception):
    """``kind``: not-found, invalid (bad path or archive), readonly, other."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _kind(e: OSError) -> str:
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
        return "not-found"
    if e.errno == errno.EROFS:
        return "readonly"
    if e.errno in (errno.ELOOP, errno.EXDEV, errno.EISDIR, errno.EEXIST, errno.ENOTEMPTY):
        return "invalid"
    return "other"


def failed(e: OSError, what: str) -> CopyError:
    return CopyError(_kind(e), f"{what}: {os.strerror(e.errno or 0)}")


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = RESOLVE_IN_ROOT) -> int:
    how = OpenHow(flags | os.O_CLOEXEC, mode, resolve | RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(_SYS_OPENAT2, dirfd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return int(fd)


def clean(path: str) -> str:
    """A path relative to the root: ``/a/./b/`` -> ``a/b``; ``/`` -> ``.``."""
    rel = posixpath.normpath("/" + path).lstrip("/")
    return rel or "."


def follows_last(path: str) -> bool:
    """Docker's rule: the last component's symlink is followed only for ``path/`` or ``path/.``."""
    return path.endswith("/") or path.endswith("/.") or path in ("", ".")


def resolve(root: int, path: str, *, follow: bool = True, flags: int = O_PATH) -> int:
    rel = clean(path)
    return openat2(root, rel, flags | (0 if follow else os.O_NOFOLLOW))


def _parent(root: int, path: str) -> tuple[int, str]:
    """(fd of the resolved parent directory, last component)."""
    rel = clean(path)
    if rel == ".":
        return openat2(root, ".", O_PATH | os.O_DIRECTORY), "."
    head, name = posixpath.split(rel)
    return openat2(root, head or ".", O_PATH | os.O_DIRECTORY), name


def stat_path(root: int, path: str) -> dict[str, Any]:
    """name, size, mode, mtime (ns), link_target of ``path``; CopyError(not-found) when missing."""
    try:
        fd = resolve(root, path, follow=follows_last(path))
    except OSError as e:
        raise failed(e, f"Could not find the file {path} in container") from None
    try:
        st = os.fstat(fd)
        target = os.readlink("", dir_fd=fd) if stat.S_ISLNK(st.st_mode) else ""
    finally:
        os.close(fd)
    name = posixpath.basename(clean(path)) if clean(path) != "." else "/"
    return {"name": name, "size": st.st_size, "mode": st.st_mode, "mtime_ns": st.st_mtime_ns,
            "link_target": target}


# --- out ---------------------------------------------------------------------------


def _info(name: str, st: os.stat_result) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.mode = stat.S_IMODE(st.st_mode)
    ti.uid, ti.gid = st.st_uid, st.st_gid
    ti.uname = ti.gname = ""
    ti.mtime = st.st_mtime
    return ti


def write_tar(root: int, path: str, out: IO[bytes], name: str | None = None) -> None:
    """A tar of ``path`` (resolved in ``root``) whose top entry is ``name`` (default its base name)."""
    try:
        fd = resolve(root, path, follow=follows_last(path), flags=O_PATH)
    except OSError as e:
        raise failed(e, f"Could not find the file {path} in container") from None
    top = name or (posixpath.basename(clean(path)) if clean(path) != "." else ".")
    links: dict[tuple[int, int], str] = {}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        try:
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode):
                ti = _info(top, st)
                ti.type, ti.linkname = tarfile.SYMTYPE, os.readlink("", dir_fd=fd)
                tf.addfile(ti)
            elif stat.S_ISDIR(st.st_mode):
                dfd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
                try:
                    _add_dir(tf, dfd, top, st, links)
                finally:
                    os.close(dfd)
            elif stat.S_ISREG(st.st_mode):
                ffd = resolve(root, path, follow=follows_last(path), flags=os.O_RDONLY | os.O_NOFOLLOW)
                with os.fdopen(ffd, "rb") as f:
                    fst = os.fstat(ffd)
                    ti = _info(top, fst)
                    ti.size = fst.st_size
                    tf.addfile(ti, _Exact(f, fst.st_size))
            elif _special(ti := _info(top, st), st):
                tf.addfile(ti)
        finally:
            os.close(fd)


def _add_dir(tf: tarfile.TarFile, dfd: int, name: str, st: os.stat_result, links: dict[tuple[int, int], str]
             ) -> None:
    ti = _info(name, st)
    ti.type = tarfile.DIRTYPE
    tf.addfile(ti)
    for entry in sorted(os.listdir(dfd)):
        try:
            est = os.stat(entry, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            continue  # removed meanwhile
        _add_entry(tf, dfd, entry, f"{name}/{entry}", est, links)


def _add_entry(tf: tarfile.TarFile, dfd: int, entry: str, name: str, st: os.stat_result,
               links: dict[tuple[int, int], str]) -> None:
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        try:
            sub = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        except OSError:
            return  # swapped for something else meanwhile
        try:
            _add_dir(tf, sub, name, os.fstat(sub), links)
        finally:
            os.close(sub)
        return
    ti = _info(name, st)
    key = (st.st_dev, st.st_ino)
    if not stat.S_ISDIR(mode) and st.st_nlink > 1 and key in links:
        ti.type, ti.linkname = tarfile.LNKTYPE, links[key]
        tf.addfile(ti)
        return
    if stat.S_ISREG(mode):
        try:
            ffd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        except OSError:
            return
        with os.fdopen(ffd, "rb") as f:
            fst = os.fstat(ffd)
            if not stat.S_ISREG(fst.st_mode):
                return
            ti.size = fst.st_size
            tf.addfile(ti, _Exact(f, fst.st_size))
        if st.st_nlink > 1:
            links[key] = name
        return
    if stat.S_ISLNK(mode):
        ti.type, ti.linkname = tarfile.SYMTYPE, os.readlink(entry, dir_fd=dfd)
    elif not _special(ti, st):
        return  # sockets are not archived (as tar)
    tf.addfile(ti)


def _special(ti: tarfile.TarInfo, st: os.stat_result) -> bool:
    """Device or fifo header; False for what tar cannot carry (sockets)."""
    mode = st.st_mode
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        ti.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
        ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        return True
    if stat.S_ISFIFO(mode):
        ti.type = tarfile.FIFOTYPE
        return True
    return False


class _Exact:
    """Exactly ``size`` bytes of ``f`` (zero-padded if the file shrank while being read)."""

    def __init__(self, f: IO[bytes], size: int):
        self.f, self.left = f, size

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n)
        data = data + b"\0" * (n - len(data))
        self.left -= len(data)
        return data


# --- in ----------------------------------------------------------------------------


def _member_path(name: str) -> str:
    if "\0" in name:
        raise CopyError("invalid", f"unsafe archive member {name!r}")
    norm = posixpath.normpath(name.lstrip("/"))
    if norm == ".." or norm.startswith("../"):
        raise CopyError("invalid", f"unsafe archive member {name!r}: it leaves the destination")
    return "" if norm == "." else norm


def _ensure_dirs(root: int, dest: str, rel: str) -> None:
    """mkdir -p of ``dest/rel`` inside the root (each step resolved in it)."""
    parts = [p for p in rel.split("/") if p]
    for i in range(len(parts)):
        sub = posixpath.join(dest, *parts[: i + 1])
        try:
            os.close(openat2(root, clean(sub), O_PATH | os.O_DIRECTORY))
            continue
        except FileNotFoundError:
            pass
        pfd, base = _parent(root, sub)
        try:
            os.mkdir(base, 0o755, dir_fd=pfd)
        except FileExistsError:
            pass
        finally:
            os.close(pfd)


def _clear(pfd: int, base: str, is_dir: bool, no_overwrite: bool, shown: str) -> bool:
    """Make room for a new entry ``base``; True when an existing directory is kept."""
    try:
        st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    old_dir = stat.S_ISDIR(st.st_mode)
    if old_dir and is_dir:
        return True
    if no_overwrite and old_dir != is_dir:
        what = "directory with non-directory" if old_dir else "non-directory with directory"
        raise CopyError("invalid", f"cannot overwrite {what} {shown}")
    if old_dir:
        shutil.rmtree(base, dir_fd=pfd)
    else:
        os.unlink(base, dir_fd=pfd)
    return False


def extract_tar(root: int, dest: str, src: IO[bytes], *, owner: tuple[int, int] | None = (0, 0),
                no_overwrite_dir_non_dir: bool = False, rename: Callable[[str], str | None] | None = None) -> None:
    """Extract ``src`` into the existing directory ``dest`` (resolved in ``root``).

    ``owner``: every entry's uid/gid (None: the archive's own, as ``cp -a``).
    ``rename``: maps member (and hard link) names; None skips the member.
    """
    try:
        dfd = resolve(root, dest, flags=O_PATH)
        is_dir = stat.S_ISDIR(os.fstat(dfd).st_mode)
        os.close(dfd)
    except OSError as e:
        raise failed(e, f"Could not find the file {dest} in container") from None
    if not is_dir:
        raise CopyError("invalid", f"extraction point is not a directory: {dest}")
    dirs: list[tuple[str, tarfile.TarInfo]] = []
    try:
        with tarfile.open(fileobj=src, mode="r|*") as tf:
            for ti in tf:
                if rename is not None:
                    new = rename(ti.name)
                    if new is None:
                        continue
                    ti.name = new
                    if ti.islnk():
                        ti.linkname = rename(ti.linkname) or ti.linkname
                rel = _member_path(ti.name)
                if not rel:
                    continue  # "./": the destination itself is left as it is
                try:
                    _extract_one(root, dest, rel, ti, tf, owner, no_overwrite_dir_non_dir, dirs)
                except OSError as e:
                    raise failed(e, f"extract {ti.name}") from None
    except tarfile.TarError as e:
        raise CopyError("invalid", f"malformed archive: {e}") from None
    except OSError as e:
        raise failed(e, "extract") from None
    for rel, ti in reversed(dirs):  # modes and times of directories last, deepest first
        try:
            fd = openat2(root, clean(posixpath.join(dest, rel)), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            _meta_fd(fd, ti, owner)
        finally:
            os.close(fd)


def _meta_fd(fd: int, ti: tarfile.TarInfo, owner: tuple[int, int] | None) -> None:
    uid, gid = owner if owner is not None else (ti.uid, ti.gid)
    os.fchown(fd, uid, gid)
    os.fchmod(fd, ti.mode & 0o7777)
    os.utime(fd, (ti.mtime, ti.mtime))


def _extract_one(root: int, dest: str, rel: str, ti: tarfile.TarInfo, tf: tarfile.TarFile,
                 owner: tuple[int, int] | None, no_overwrite: bool, dirs: list[tuple[str, tarfile.TarInfo]]
                 ) -> None:
    head, base = posixpath.split(rel)
    if head:
        _ensure_dirs(root, dest, head)
    pfd, _ = _parent(root, posixpath.join(dest, rel))
    try:
        kept = _clear(pfd, base, ti.isdir(), no_overwrite, "/" + clean(posixpath.join(dest, rel)))
        uid, gid = owner if owner is not None else (ti.uid, ti.gid)
        if ti.isdir():
            if not kept:
                os.mkdir(base, 0o700, dir_fd=pfd)
            dirs.append((rel, ti))
            return
        if ti.isreg():
            fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=pfd)
            with os.fdopen(fd, "wb") as out:
                data = tf.extractfile(ti)
                if data is not None:
                    shutil.copyfileobj(data, out, CHUNK)
                out.flush()
                _meta_fd(out.fileno(), ti, owner)
            return
        if ti.issym():
            os.symlink(ti.linkname, base, dir_fd=pfd)
        elif ti.islnk():
            target = _member_path(ti.linkname)
            sfd, sbase = _parent(root, posixpath.join(dest, target))
            try:
                os.link(sbase, base, src_dir_fd=sfd, dst_dir_fd=pfd, follow_symlinks=False)
            finally:
                os.close(sfd)
            return
        elif ti.ischr() or ti.isblk() or ti.isfifo():
            kind = stat.S_IFCHR if ti.ischr() else stat.S_IFBLK if ti.isblk() else stat.S_IFIFO
            os.mknod(base, kind | 0o600, os.makedev(ti.devmajor, ti.devminor), dir_fd=pfd)
        else:
            return  # other types (GNU sparse/long names are folded by tarfile)
        os.chown(base, uid, gid, dir_fd=pfd, follow_symlinks=False)
        if not ti.issym():
            fd = openat2(pfd, base, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | O_PATH, resolve=0)
            try:
                os.chmod(f"/proc/self/fd/{fd}", ti.mode & 0o7777)
            finally:
                os.close(fd)
        os.utime(base, (ti.mtime, ti.mtime), dir_fd=pfd, follow_symlinks=False)
    finally:
        os.close(pfd)
