"""Persistent network namespaces as bind-mounted nsfs files, made without fork().

gRPC Python does not support ``fork()`` in a server process, and pyroute2's
``netns.create`` and ``IPRoute(netns=…)`` fork a child (``pyroute2.process.ChildProcess``).
Namespaces are per thread, so instead a short-lived thread of our own does the
work ``ip netns add`` does in a child:

1. ``unshare(CLONE_NEWNET)`` — only this thread moves into a fresh namespace;
2. bind-mount ``/proc/thread-self/ns/net`` onto the target file, which keeps the
   namespace alive after the thread is gone (mounts are per process, not per thread);
3. open a socket there (a socket stays bound to the namespace it was made in) and bring
   ``lo`` up with a SIOCSIFFLAGS ioctl;
4. exit. The thread never runs anything else, so it never has to find its way
   back into the host namespace; the host's threads are untouched.

Measured on the development VM (2 cores, 50 creates): 2.2 ms per namespace, against
3.9 ms for a ``fork+exec`` of ``unshare --net=FILE ip link set lo up``. ``lo`` is set up
with the ioctl rather than a pyroute2 ``IPRoute``: 0.1 ms against 1.2-2.8 ms (a ``none``
endpoint is on the path of every ``run --network none``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import logging
import os
import socket
import struct
import threading
from pathlib import Path

from skiff.common.errors import Internal

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SHARED = 1 << 20
MNT_DETACH = 2
#: The kernel always gives a new namespace's loopback ifindex 1 (saves a dump).
LOOPBACK_IFINDEX = 1

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str, target: str, fstype: str | None, flags: int) -> None:
    _check(
        _libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags, None),
        f"mount({source!r}, {target!r}, flags={flags:#x})",
    )


def umount(target: str, flags: int = MNT_DETACH) -> None:
    _check(_libc.umount2(target.encode(), flags), f"umount2({target!r})")
    _mount_points_made.discard(target)


def _unescape(field: str) -> str:
    """Undo mountinfo's octal escapes (``\\040`` for a space, etc.)."""
    if "\\" not in field:
        return field
    return field.encode().decode("unicode_escape").encode("latin-1").decode()


def mount_points() -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every mount in our mount namespace, in mount order."""
    result: list[tuple[str, str]] = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            result.append((_unescape(fields[4]), right.split()[0]))
    return result


def is_mounted(path: Path) -> bool:
    p = str(path)
    return any(mp == p for mp, _ in mount_points())


def mounted_under(directory: Path) -> set[str]:
    """Names of files directly under ``directory`` that are nsfs mounts."""
    prefix = str(directory) + "/"
    return {
        mp[len(prefix):]
        for mp, fstype in mount_points()
        if fstype == "nsfs" and mp.startswith(prefix) and "/" not in mp[len(prefix):]
    }


def ensure_mount_point(directory: Path) -> None:
    """Make ``directory`` a mount point of its own peer group, as iproute2 does for /run/netns.

    A shared mount propagates our later unmounts into mount namespaces that
    copied it (a helper's, a container's before it pivots), so a deleted namespace
    is not kept alive by a stale copy. Making it private first gives it a new peer
    group, so our nsfs mounts do not propagate back into the parent mount.
    """
    d = str(directory)
    if d in _mount_points_made:  # known (saves reading mountinfo on every create)
        return
    directory.mkdir(parents=True, exist_ok=True)
    if not is_mounted(directory):
        mount(d, d, None, MS_BIND | MS_REC)
        mount("none", d, None, MS_PRIVATE)
        mount("none", d, None, MS_SHARED)
    _mount_points_made.add(d)


#: Directories :func:`ensure_mount_point` has seen mounted (forgotten by :func:`umount`).
_mount_points_made: set[str] = set()


def _in_new_netns(path: str, result: list[BaseException | socket.socket | None], keep_socket: bool) -> None:
    """Thread body: the thread's own namespace becomes the new one, then the thread ends."""
    try:
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        mount("/proc/thread-self/ns/net", path, None, MS_BIND)
        _set_lo_up()
        result.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) if keep_socket
                      else None)
    except BaseException as err:
        result.append(err)


def socket_in(path: Path) -> socket.socket:
    """A UDP socket (unbound) that belongs to the namespace at ``path``, from a throwaway thread
    that ``setns()``es: interface ioctls on it act in that namespace."""
    result: list[BaseException | socket.socket] = []

    def body() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _check(_libc.setns(fd, CLONE_NEWNET), f"setns({path})")
            finally:
                os.close(fd)
            result.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC))
        except BaseException as err:
            result.append(err)

    thread = threading.Thread(target=body, name="netns-socket")
    thread.start()
    thread.join()
    got = result[0] if result else RuntimeError("netns thread died")
    if isinstance(got, BaseException):
        raise got
    return got


SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_IFREQ = "16sH22x"  # struct ifreq: the name, then ifr_flags in the 24-byte union


def _set_lo_up() -> None:
    """Bring ``lo`` up in the calling thread's namespace (the socket is bound to it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        flags = struct.unpack(_IFREQ, fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, struct.pack(_IFREQ, b"lo", 0)))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | IFF_UP))


def create(path: Path, keep_socket: bool = False) -> socket.socket | None:
    """Create a persistent network namespace at ``path`` with ``lo`` up.

    ``path.parent`` must already be a mount point (:func:`ensure_mount_point`).
    Raises :class:`Internal` if the kernel refuses; leaves nothing behind then.
    ``keep_socket``: also return a UDP socket that belongs to the new namespace (made by
    the same thread), for interface ioctls there; the caller closes it.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    except FileExistsError:
        if is_mounted(path):  # already a namespace (an earlier call got this far)
            return socket_in(path) if keep_socket else None
    else:
        os.close(fd)
    result: list[BaseException | socket.socket | None] = []
    thread = threading.Thread(target=_in_new_netns, args=(str(path), result, keep_socket), name="netns-create")
    thread.start()
    thread.join()
    got = result[0] if result else RuntimeError("netns thread died")
    if isinstance(got, BaseException):
        remove(path)
        raise Internal(f"cannot create network namespace {path}: {got}") from got
    return got


def remove(path: Path) -> None:
    """Unmount and unlink a namespace file. Idempotent."""
    try:
        umount(str(path), MNT_DETACH)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOENT):  # EINVAL: not a mount point
            raise Internal(f"cannot unmount {path}: {err}") from err
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
