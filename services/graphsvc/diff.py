"""A container's writable layer read back: ``skiff diff`` lines and the layer tar of ``commit``.

The overlay upperdir holds what the container changed, in overlayfs' format:
a deleted path is a 0:0 character device, a directory whose lower content is
hidden carries ``trusted.overlay.opaque=y``. Both are turned back into OCI
whiteouts (``.wh.<name>``, ``.wh..wh..opq``) for a layer tar.

Paths the runtime itself creates as mount points (Docker's "init layer":
``/proc``, ``/sys``, ``/dev``, ``/etc/hosts``, ...) are never reported or
committed, and a directory that is only in the upperdir because of them is
not reported either.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from skiff.graphsvc import archive

#: Mount points and files the runtime provides (Docker's init layer), relative to the root.
RUNTIME_PATHS = frozenset({"proc", "sys", "dev", "etc/hosts", "etc/hostname", "etc/resolv.conf", ".dockerenv"})

ADDED, MODIFIED, DELETED = "A", "C", "D"


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, archive.OVERLAY_OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _excluded(rel: str) -> bool:
    return any(rel == p or rel.startswith(p + "/") for p in RUNTIME_PATHS)


def _walk(upper: Path) -> Iterator[tuple[str, str, os.stat_result]]:
    """(relative path, absolute path, lstat) of every entry, parents first, sorted, runtime paths left out."""
    for dirpath, dirnames, filenames in os.walk(upper):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, upper)
        rel_dir = "" if rel_dir == "." else rel_dir
        keep = []
        for name in dirnames:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if not _excluded(rel):
                keep.append(name)
        dirnames[:] = keep
        for name in sorted(dirnames + filenames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if _excluded(rel):
                continue
            full = os.path.join(dirpath, name)
            yield rel, full, os.lstat(full)


def _in_lower(rel: str, lowers: list[Path]) -> bool:
    """Whether ``rel`` is visible in the lower layers (top first), honouring their whiteouts."""
    for lower in lowers:
        path = lower / rel
        try:
            st = path.lstat()
        except (FileNotFoundError, NotADirectoryError):
            # an opaque parent in this layer hides everything below it
            if _opaque_parent(lower, rel):
                return False
            continue
        return not is_whiteout(st)
    return False


def _opaque_parent(lower: Path, rel: str) -> bool:
    parent = os.path.dirname(rel)
    while parent:
        if is_opaque(str(lower / parent)):
            return True
        parent = os.path.dirname(parent)
    return False


def changes(upper: Path, lowers: list[Path]) -> list[tuple[str, str]]:
    """``skiff diff``: (kind, "/path") sorted by path; a directory below counts only if something in it did."""
    entries: list[tuple[str, str, bool]] = []  # (rel, kind, is_dir_below)
    for rel, full, st in _walk(upper):
        if is_whiteout(st):
            entries.append((rel, DELETED, False))
        elif _in_lower(rel, lowers):
            entries.append((rel, MODIFIED, stat.S_ISDIR(st.st_mode) and not is_opaque(full)))
        else:
            entries.append((rel, ADDED, False))
    reported = {rel for rel, _, dir_below in entries if not dir_below}
    out = []
    for rel, kind, dir_below in entries:
        if dir_below and not any(r.startswith(rel + "/") for r in reported):
            continue
        out.append((kind, "/" + rel))
    return sorted(out, key=lambda kp: kp[1])


def write_layer(upper: Path, out: IO[bytes]) -> None:
    """The upperdir as an OCI layer tar (whiteouts as ``.wh.`` entries), written to ``out``."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]
        for rel, full, st in _walk(upper):
            if is_whiteout(st):
                info = tarfile.TarInfo(_join(os.path.dirname(rel), archive.WHITEOUT_PREFIX + os.path.basename(rel)))
                info.mtime = int(st.st_mtime)
                tf.addfile(info)
                continue
            if stat.S_ISSOCK(st.st_mode):
                continue  # sockets are not part of an image (tar has no type for them); devices and fifos are
            info = tf.gettarinfo(full, arcname=rel)
            info.uname = info.gname = ""
            if info.isreg():
                with open(full, "rb") as f:
                    tf.addfile(info, f)
            else:
                tf.addfile(info)
            if info.isdir() and is_opaque(full):
                opq = tarfile.TarInfo(rel + "/" + archive.OPAQUE_WHITEOUT)
                opq.mtime = int(st.st_mtime)
                tf.addfile(opq)


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name
