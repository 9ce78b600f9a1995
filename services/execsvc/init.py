"""The container's PID 1 until it execs the user's command.

Run by skiff-shim inside the new namespaces as ``python3 -I -S init.py
<bundle>``; reads ``<bundle>/config.json`` (execsvc's marshal copy of it). stdlib only and few imports, for
a fast start. Every module is imported at the top: after pivot_root the
host's Python library is out of reach (``_socket``, needed for a terminal only, is imported
before pivot_root when the config asks for one). ``_signal`` and ``_socket`` rather than
``signal`` and ``socket``: those import enum and selectors, about half of the init's import time;
and ``_ctypes`` with the few C types it needs (class ``ctypes`` below), not the ctypes package (~2 ms).

fd 3 is the sync pipe to the shim. We mark it close-on-exec, so a successful
execve of the user's command closes it (the shim reads EOF = started). On
failure we write ``<kind>\\n<message>`` to it (kind: ``not-found``,
``not-executable`` or ``other``) and exit.
"""

import _ctypes
import _signal
import marshal
import os
import resource
import stat
import sys

SYNC_FD = 3
#: With a terminal: the shim's end of the console socketpair (the master goes back over it).
CONSOLE_FD = 4
TIOCSCTTY = 0x540E
TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431
TIOCSWINSZ = 0x5414

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2
O_PATH = 0o10000000
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
# x86_64 syscall numbers of the new mount API
SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR = 428, 429, 442
OPEN_TREE_CLONE, MOVE_MOUNT_F_EMPTY_PATH = 1, 0x4
PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
#: Capability names by number (linux/capability.h); unit-tested against skiff.execsvc.security.CAPS.
CAP_NAMES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE",
)

#: mount(8) option -> (flag, clear?)
MOUNT_FLAGS = {
    "ro": (MS_RDONLY, False),
    "rw": (MS_RDONLY, True),
    "nosuid": (MS_NOSUID, False),
    "suid": (MS_NOSUID, True),
    "nodev": (MS_NODEV, False),
    "dev": (MS_NODEV, True),
    "noexec": (MS_NOEXEC, False),
    "exec": (MS_NOEXEC, True),
    "noatime": (MS_NOATIME, False),
    "nodiratime": (MS_NODIRATIME, False),
    "relatime": (MS_RELATIME, False),
    "strictatime": (MS_STRICTATIME, False),
    "bind": (MS_BIND, False),
    "rbind": (MS_BIND | MS_REC, False),
}

#: name -> (major, minor); all 0666 like Docker's defaults.
DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0)}
DEV_LINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
    "core": "/proc/kcore",
    "ptmx": "pts/ptmx",
}

class ctypes:  # (stands in for the package: call sites read as ctypes.<name>)
    """The part of the ctypes package the init uses, made from ``_ctypes`` directly: importing
    the package (its ~40 types, struct, its function-type caches) costs ~2 ms of each start."""

    byref = staticmethod(_ctypes.byref)
    sizeof = staticmethod(_ctypes.sizeof)
    get_errno = staticmethod(_ctypes.get_errno)

    class c_int(_ctypes._SimpleCData):
        _type_ = "i"

    class c_uint(_ctypes._SimpleCData):
        _type_ = "I"

    class c_ulong(_ctypes._SimpleCData):
        _type_ = "L"

    class c_ushort(_ctypes._SimpleCData):
        _type_ = "H"

    class c_uint8(_ctypes._SimpleCData):
        _type_ = "B"

    c_uint16, c_uint32 = c_ushort, c_uint

    class c_uint64(_ctypes._SimpleCData):
        _type_ = "Q"


class _LibcFunction(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = ctypes.c_int


class _Libc:
    """``ctypes.CDLL(None, use_errno=True)``: the process's C library functions by name, returning int."""

    def __init__(self):
        self._handle = _ctypes.dlopen(None, os.RTLD_NOW)  # type: ignore[arg-type]

    def __getattr__(self, name):
        func = _LibcFunction((name, self))  # type: ignore[arg-type]
        setattr(self, name, func)
        return func


libc = _Libc()


class CapHeader(_ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(_ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


class SockFilter(_ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class SockFprog(_ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", _ctypes.POINTER(SockFilter))]


class StartError(Exception):
    """A failure to report to the shim; ``kind`` selects Docker's exit code 127/126/other."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


def check(rc, what):
    """Raise with the syscall that failed and the errno text."""
    if rc != 0:
        err = ctypes.get_errno()
        raise StartError("other", f"{what}: {os.strerror(err)}")


def mount(source, target, fstype, flags, data=""):
    rc = libc.mount(
        source.encode() if source else None,
        target.encode(),
        fstype.encode() if fstype else None,
        ctypes.c_ulong(flags),
        data.encode() if data else None,
    )
    check(rc, f"mount {fstype or 'flags'} on {target}")


def umount2(target, flags):
    check(libc.umount2(target.encode(), flags), f"umount2 {target}")


def pivot_root(new, old):
    check(libc.syscall(155, new.encode(), old.encode()), "pivot_root")  # SYS_pivot_root on x86_64


def sethostname(name):
    b = name.encode()
    check(libc.sethostname(b, len(b)), "sethostname")


def parse_options(options):
    flags, data = 0, []
    for opt in options:
        if opt in MOUNT_FLAGS:
            bit, clear = MOUNT_FLAGS[opt]
            flags = flags & ~bit if clear else flags | bit
        else:
            data.append(opt)
    return flags, ",".join(data)


def secure_join(root, path):
    """root + path with every symlink resolved *inside* root, so an image can't point a mount outside it."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > 40:
                raise StartError("other", f"too many symlinks in {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
        else:
            resolved.append(part)
    return os.path.join(root, *resolved)


def join_cgroups(procs_files):
    # First, so that everything the container allocates from here on is accounted.
    for f in procs_files:
        try:
            with open(f, "w") as fh:
                fh.write("0")
        except OSError as e:
            raise StartError("other", f"join cgroup {f}: {e.strerror}") from e


NS_FLAGS = {"ipc": 0x08000000, "uts": 0x04000000, "pid": 0x20000000, "cgroup": 0x02000000}
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWNS = 0x00020000


def join_namespaces(cfg):
    """Namespaces given by path (``--ipc container:<id>``), other than the network's (the shim's)."""
    for ns in cfg.get("linux", {}).get("namespaces", []):
        if ns.get("path") and ns["type"] in NS_FLAGS:
            try:
                fd = os.open(ns["path"], os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                raise StartError("other", f"open {ns['type']} namespace {ns['path']}: {e.strerror}") from e
            try:
                check(libc.setns(fd, NS_FLAGS[ns["type"]]), f"setns {ns['type']}")
            finally:
                os.close(fd)


def new_cgroup_namespace(cfg):
    """``--cgroupns private``: after joining the cgroup, so the namespace is rooted at it."""
    if any(ns["type"] == "cgroup" and not ns.get("path") for ns in cfg.get("linux", {}).get("namespaces", [])):
        check(libc.unshare(CLONE_NEWCGROUP), "unshare(CLONE_NEWCGROUP)")


# --- --userns-remap ------------------------------------------------------------------
#
# The container's other namespaces stay the host's (owned by the initial user
# namespace): the set-up is done as the host's root, then the init enters a user
# namespace that maps container root to an unprivileged host uid, right before it
# drops to the container's user. The image layers are not chowned: the overlay is
# made of an idmapped mount of the layers, so on-disk root shows as container root.

CLONE_NEWUSER = 0x10000000
MOUNT_ATTR_IDMAP = 0x00100000


def make_userns(cfg):
    """A user namespace with the config's uid/gid maps; returns an fd to it (or None)."""
    uid_maps = cfg.get("linux", {}).get("uidMappings")
    if not uid_maps:
        return None
    gid_maps = cfg["linux"].get("gidMappings") or uid_maps
    go_r, go_w = os.pipe()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the helper: a new user namespace, then wait to be measured
        try:
            os.close(go_w)
            os.close(ready_r)
            rc = libc.unshare(CLONE_NEWUSER)
            os.write(ready_w, b"1" if rc == 0 else b"0")
            os.read(go_r, 1)
        finally:
            os._exit(0)
    os.close(go_r)
    os.close(ready_w)
    try:
        if os.read(ready_r, 1) != b"1":
            raise StartError("other", "unshare(CLONE_NEWUSER) failed")
        # /proc is still the host's here: the helper's entry is under its host pid.
        pidfd = os.pidfd_open(pid)
        try:
            with open(f"/proc/self/fdinfo/{pidfd}") as f:
                host_pid = next(int(line.split()[1]) for line in f if line.startswith("Pid:"))
        finally:
            os.close(pidfd)
        for name, maps in (("uid_map", uid_maps), ("gid_map", gid_maps)):
            text = "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in maps)
            try:
                with open(f"/proc/{host_pid}/{name}", "w") as f:
                    f.write(text)
            except OSError as e:
                raise StartError("other", f"write {name}: {e.strerror}") from e
        return os.open(f"/proc/{host_pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(go_w)  # the helper exits
        os.close(ready_r)
        os.waitpid(pid, 0)


def _mount_attr_idmap(fd, userns_fd):
    attr = MountAttr(MOUNT_ATTR_IDMAP, 0, 0, userns_fd)
    check(libc.syscall(SYS_MOUNT_SETATTR, fd, b"", AT_EMPTY_PATH | AT_RECURSIVE, ctypes.byref(attr),
                       ctypes.sizeof(attr)), "mount_setattr(MOUNT_ATTR_IDMAP)")


def mount_rootfs_idmapped(cfg, rootfs, userns_fd):
    """The overlay over an idmapped view of the layers' common directory (on-disk uid u shows as
    the mapped host uid, so container root owns what host root owns on disk)."""
    m = cfg["skiff"]["rootfsMount"]
    opts = [o for o in m["options"] if o]
    dirs = []
    for o in opts:
        key, _, value = o.partition("=")
        if key in ("lowerdir", "upperdir", "workdir"):
            dirs += value.split(":")
    src = os.path.commonpath(dirs) if m["type"] == "overlay" and dirs else m["source"]
    stage = os.path.join(os.path.dirname(rootfs), "idmapped")
    os.makedirs(stage, exist_ok=True)
    tree = libc.syscall(SYS_OPEN_TREE, -100, src.encode(), OPEN_TREE_CLONE | os.O_CLOEXEC | AT_RECURSIVE)
    if tree < 0:
        raise StartError("other", f"open_tree {src}: {os.strerror(ctypes.get_errno())}")
    try:
        _mount_attr_idmap(tree, userns_fd)
        check(libc.syscall(SYS_MOVE_MOUNT, tree, b"", -100, stage.encode(), MOVE_MOUNT_F_EMPTY_PATH),
              f"move_mount on {stage}")
    finally:
        os.close(tree)
    # overlayfs does its own work (workdir, copy-up) with the mounter's credentials, and
    # what the set-up creates in the root (mount points, /etc files) must be representable
    # through the idmapped layers: from here until enter_userns, the file system ids are the
    # mapped root's (fsuid/fsgid), with every capability kept effective.
    libc.setfsgid(cfg["linux"]["gidMappings"][0]["hostID"])
    libc.setfsuid(cfg["linux"]["uidMappings"][0]["hostID"])
    _raise_effective()
    if m["type"] == "overlay":
        def moved(value):
            return ":".join(os.path.join(stage, os.path.relpath(d, src)) for d in value.split(":"))
        new = []
        for o in opts:
            key, _, value = o.partition("=")
            new.append(f"{key}={moved(value)}" if key in ("lowerdir", "upperdir", "workdir") else o)
        mount(m["source"], rootfs, "overlay", 0, ",".join(new))
    else:
        mount(stage, rootfs, None, MS_BIND | MS_REC)
    umount2(stage, 2)  # MNT_DETACH: the overlay keeps the layers


def _raise_effective():
    """Effective = permitted (setfsuid away from 0 clears the file capabilities' effective bits)."""
    hdr = CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (CapData * 2)()
    check(libc.capget(ctypes.byref(hdr), data), "capget")
    for d in data:
        d.effective = d.permitted
    check(libc.capset(ctypes.byref(hdr), data), "capset")


def enter_userns(userns_fd, cfg=None):
    """Last step of the set-up as the host's root: from here on, root is the mapped uid.

    The mounts are the host user namespace's: masked and read-only paths are made
    before (security_hooks then finds nothing left to mask)."""
    if userns_fd is None:
        return
    if cfg is not None:
        linux = cfg.get("linux", {})
        mask_paths(linux.get("maskedPaths", []), linux.get("readonlyPaths", []))
        linux["maskedPaths"], linux["readonlyPaths"] = [], []
    check(libc.setns(userns_fd, CLONE_NEWUSER), "setns user")
    os.close(userns_fd)


def mount_rootfs(cfg, rootfs):
    m = cfg["skiff"]["rootfsMount"]
    if m["type"] == "bind":
        mount(m["source"], rootfs, None, MS_BIND | MS_REC)
    else:
        mount(m["source"], rootfs, m["type"], 0, ",".join(m["options"]))


def mount_one(rootfs, m):
    if m.get("skiffMountNamespace"):
        return mount_from_namespace(rootfs, m)
    dest = secure_join(rootfs, m["destination"])
    flags, data = parse_options(m.get("options", []))
    if m["type"] == "bind" or flags & MS_BIND:
        src = m["source"]
        if os.path.isdir(src):
            os.makedirs(dest, exist_ok=True)
        elif not os.path.exists(dest):
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            open(dest, "a").close()
        mount(src, dest, None, MS_BIND | (flags & MS_REC))
        if flags & ~(MS_BIND | MS_REC):
            # A bind mount ignores most flags; they take effect on a remount.
            mount("", dest, None, (flags & ~MS_REC) | MS_REMOUNT | MS_BIND)
        return
    os.makedirs(dest, exist_ok=True)
    mount(m["source"], dest, m["type"], flags, data)


# --- binds, volumes and tmpfs mounts (-v, --mount, image VOLUMEs) -----------------

MOUNT_ATTR_RDONLY = 0x1
#: propagation name -> mount flags for a second mount() call on the new mount
PROPAGATION = {
    "private": MS_PRIVATE, "rprivate": MS_PRIVATE | MS_REC,
    "shared": MS_SHARED, "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE, "rslave": MS_SLAVE | MS_REC,
}
#: statvfs f_flag bits -> mount flags a read-only remount must keep (runc keeps them too)
_ST_KEEP = ((1, MS_RDONLY), (2, MS_NOSUID), (4, MS_NODEV), (8, MS_NOEXEC), (1024, MS_NOATIME),
            (2048, MS_NODIRATIME), (4096, MS_RELATIME))


def root_propagation(cfg):
    """MS_SLAVE when a bind asks for slave/shared propagation, else MS_PRIVATE (the default)."""
    return MS_SLAVE if cfg.get("linux", {}).get("rootfsPropagation") == "rslave" else MS_PRIVATE


def _open_target(dest, is_dir):
    """The resolved destination, made if missing, opened O_PATH|O_NOFOLLOW: the mount goes on
    exactly this inode, never through a symlink swapped in by name."""
    try:
        if is_dir:
            os.makedirs(dest, exist_ok=True)
        elif not os.path.lexists(dest):
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            os.close(os.open(dest, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o755))
        fd = os.open(dest, O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise StartError("other", f"mount destination {dest}: {e.strerror}") from e
    st = os.fstat(fd)
    if stat.S_ISLNK(st.st_mode) or stat.S_ISDIR(st.st_mode) != is_dir:
        os.close(fd)
        kind = "a directory" if is_dir else "a file"
        raise StartError("other", f"mount destination {dest} is not {kind}")
    return fd


def _copy_tree(src, dst):
    """Entries of the image's directory ``src`` into the empty volume directory ``dst``: modes,
    owners and times kept, symlinks copied as links (never followed)."""
    for name in os.listdir(src):
        s, d = os.path.join(src, name), os.path.join(dst, name)
        st = os.lstat(s)
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(d, 0o700)
            _copy_tree(s, d)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(s), d)
        elif stat.S_ISREG(st.st_mode):
            fin = os.open(s, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                fout = os.open(d, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                try:
                    while True:
                        chunk = os.read(fin, 1 << 20)
                        if not chunk:
                            break
                        os.write(fout, chunk)
                finally:
                    os.close(fout)
            finally:
                os.close(fin)
        elif stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            os.mknod(d, stat.S_IFMT(st.st_mode) | 0o600, st.st_rdev)
        else:
            continue  # sockets
        _copy_meta(d, st)


def _copy_meta(path, st):
    os.lchown(path, st.st_uid, st.st_gid)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(path, stat.S_IMODE(st.st_mode))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def copy_up(source, dest):
    """Docker's copy of the image's content into a new volume: only when the volume is empty
    and the image has a directory there; the directory's own mode and owner come along."""
    try:
        st = os.lstat(dest)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode) or os.listdir(source):
        return
    try:
        _copy_tree(dest, source)
        _copy_meta(source, st)
    except OSError as e:
        raise StartError("other", f"copy the image's {dest} into the volume: {e.strerror}") from e


def _bind(source, fd, dest, m):
    mount(source, f"/proc/self/fd/{fd}", None, MS_BIND | MS_REC)
    # The fd names the covered inode; the new mount's root is what a fresh lookup finds.
    top = os.open(dest, O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        _bind_flags(source, f"/proc/self/fd/{top}", m, top)
    finally:
        os.close(top)


class MountAttr(_ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _recursive_readonly(fd):
    """Submounts of a read-only bind read-only too (Docker's default since 25 on kernels >= 5.12);
    without mount_setattr the top mount alone is read-only, as Docker falls back."""
    attr = MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    libc.syscall(SYS_MOUNT_SETATTR, fd, b"", AT_EMPTY_PATH | AT_RECURSIVE, ctypes.byref(attr),
                 ctypes.sizeof(attr))


def _bind_flags(source, target, m, fd):
    if m.get("readonly"):
        # A bind takes its flags from a remount; keep what the source mount has (nosuid, nodev, ...).
        vfs = os.statvfs(source)
        keep = 0
        for bit, flag in _ST_KEEP:
            if vfs.f_flag & bit:
                keep |= flag
        mount("", target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | keep)
        _recursive_readonly(fd)
    mount("", target, None, PROPAGATION.get(m.get("propagation") or "rprivate", MS_PRIVATE | MS_REC))


def mount_user_mounts(rootfs, mounts):
    """-v / --mount / image VOLUMEs, parents first, before pivot_root: every destination is
    resolved inside the container's root (secure_join) and mounted through an O_PATH fd."""
    for m in mounts:
        dest = secure_join(rootfs, m["destination"])
        if m["type"] == "tmpfs":
            flags = MS_NOSUID | MS_NODEV | MS_NOEXEC | (MS_RDONLY if m.get("readonly") else 0)
            fd = _open_target(dest, True)
            try:
                mount("tmpfs", f"/proc/self/fd/{fd}", "tmpfs", flags, m.get("data", ""))
            finally:
                os.close(fd)
            continue
        source = m["source"]
        is_dir = os.path.isdir(source)
        if m.get("copyUp") and is_dir:
            copy_up(source, dest)
        fd = _open_target(dest, is_dir)
        try:
            _bind(source, fd, dest, m)
        finally:
            os.close(fd)


def mount_from_namespace(rootfs, m):
    """Bind ``source`` as seen in another mount namespace (the IPC donor's /dev/shm).

    A plain bind cannot cross mount namespaces; a detached copy made there with
    open_tree(OPEN_TREE_CLONE) can be attached here with move_mount.
    """
    dest = secure_join(rootfs, m["destination"])
    os.makedirs(dest, exist_ok=True)
    own = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        other = os.open(m["skiffMountNamespace"], os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        os.close(own)
        raise StartError("other", f"open {m['skiffMountNamespace']}: {e.strerror}") from e
    try:
        check(libc.setns(other, CLONE_NEWNS), "setns mnt (donor)")
        tree = libc.syscall(SYS_OPEN_TREE, -100, m["source"].encode(),
                            OPEN_TREE_CLONE | os.O_CLOEXEC | AT_RECURSIVE)
        err = ctypes.get_errno()
        check(libc.setns(own, CLONE_NEWNS), "setns mnt (back)")
        if tree < 0:
            raise StartError("other", f"open_tree {m['source']} of the donor: {os.strerror(err)}")
        try:
            check(libc.syscall(SYS_MOVE_MOUNT, tree, b"", -100, dest.encode(), MOVE_MOUNT_F_EMPTY_PATH),
                  f"move_mount on {dest}")
        finally:
            os.close(tree)
    finally:
        os.close(own)
        os.close(other)


def populate_dev(rootfs):
    dev = os.path.join(rootfs, "dev")
    for name, (major, minor) in DEVICES.items():
        path = os.path.join(dev, name)
        try:
            os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        except OSError as e:
            raise StartError("other", f"mknod {path}: {e.strerror}") from e
        os.chmod(path, 0o666)
    for name, target in DEV_LINKS.items():
        link = os.path.join(dev, name)
        if not os.path.lexists(link):
            os.symlink(target, link)


def enter_rootfs(rootfs):
    # pivot_root(".", ".") stacks the old root on top of the new one; unmounting
    # "." then detaches the old root without needing a put_old directory (runc's way).
    os.chdir(rootfs)
    pivot_root(".", ".")
    # The old root must not propagate the unmount back to the host.
    mount("", ".", None, MS_SLAVE | MS_REC)
    umount2(".", MNT_DETACH)
    os.chdir("/")


def prctl(option, arg2, what):
    check(libc.prctl(option, ctypes.c_ulong(arg2), 0, 0, 0), f"prctl {what}")


def mask_paths(masked, readonly):
    """Docker's masked and read-only paths. After pivot_root, so every path resolves
    inside the container's root; /dev/null is the container's own."""
    for p in masked:
        try:
            st = os.lstat(p)
        except OSError:
            continue  # not on this kernel
        if stat.S_ISDIR(st.st_mode):
            mount("tmpfs", p, "tmpfs", MS_RDONLY)
        else:
            mount("/dev/null", p, None, MS_BIND)
    for p in readonly:
        if not os.path.lexists(p):
            continue
        mount(p, p, None, MS_BIND | MS_REC)
        mount("", p, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)


def cap_mask(names):
    mask = 0
    for name in names:
        short = name.removeprefix("CAP_")
        if short not in CAP_NAMES:
            raise StartError("other", f"unknown capability {name}")
        mask |= 1 << CAP_NAMES.index(short)
    return mask


def set_capabilities(caps):
    """Bounding set first (dropping needs CAP_SETPCAP, which capset may remove), then capset, then ambient."""
    bounding = cap_mask(caps.get("bounding", []))
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        if not bounding & (1 << cap):
            prctl(PR_CAPBSET_DROP, cap, f"PR_CAPBSET_DROP {cap}")
    eff, prm, inh = (cap_mask(caps.get(k, [])) for k in ("effective", "permitted", "inheritable"))
    hdr = CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (CapData * 2)(
        CapData(eff & 0xFFFFFFFF, prm & 0xFFFFFFFF, inh & 0xFFFFFFFF), CapData(eff >> 32, prm >> 32, inh >> 32)
    )
    check(libc.capset(ctypes.byref(hdr), data), "capset")
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, "PR_CAP_AMBIENT_CLEAR_ALL")
    for name in caps.get("ambient", []):
        cap = cap_mask([name]).bit_length() - 1
        rc = libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, ctypes.c_ulong(cap), 0, 0)
        check(rc, f"prctl PR_CAP_AMBIENT_RAISE {name}")


def security_hooks(cfg, seccomp=None):
    """Masked/read-only paths (needs CAP_SYS_ADMIN: before the capabilities go), then
    capabilities, then no_new_privs. Before the user switch: setuid() to a non-root user
    without PR_SET_KEEPCAPS empties the permitted and effective sets, as Docker's
    non-root users have them (CapEff 0; the bounding set stays Docker's 14).
    Seccomp comes later, in load_seccomp(), except without no_new_privs: then loading a
    filter needs CAP_SYS_ADMIN, so it is loaded here before the capabilities go (runc's
    order); returns True when it did."""
    linux = cfg.get("linux", {})
    mask_paths(linux.get("maskedPaths", []), linux.get("readonlyPaths", []))
    early = seccomp is not None and not cfg["process"].get("noNewPrivileges")
    if early:
        load_seccomp(seccomp)
    if "capabilities" in cfg["process"]:
        set_capabilities(cfg["process"]["capabilities"])
    if cfg["process"].get("noNewPrivileges"):
        prctl(PR_SET_NO_NEW_PRIVS, 1, "PR_SET_NO_NEW_PRIVS")
    return early


def set_sysctls(sysctls):
    for key, value in sysctls.items():
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            with open(path, "w") as f:
                f.write(str(value))
        except OSError as e:
            raise StartError("other", f"write sysctl key {key}: {e.strerror}") from e


def make_devices(rootfs, nodes):
    """``--device``: the nodes of config.json's ``linux.devices`` (their cgroup rules are execsvc's)."""
    for d in nodes:
        dest = secure_join(rootfs, d["path"])
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if os.path.lexists(dest):
            os.unlink(dest)
        kind = stat.S_IFCHR if d["type"] == "c" else stat.S_IFBLK
        try:
            os.mknod(dest, d.get("fileMode", 0o666) | kind, os.makedev(d["major"], d["minor"]))
            os.chmod(dest, d.get("fileMode", 0o666))
            os.chown(dest, d.get("uid", 0), d.get("gid", 0))
        except OSError as e:
            raise StartError("other", f"mknod {d['path']}: {e.strerror}") from e


def copy_host_devices(rootfs):
    """--privileged: the host's device nodes (the top level of /dev, before pivot_root)."""
    dev = os.path.join(rootfs, "dev")
    for name in os.listdir("/dev"):
        src = os.path.join("/dev", name)
        try:
            st = os.lstat(src)
        except OSError:
            continue
        if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            continue
        dest = os.path.join(dev, name)
        if os.path.lexists(dest):
            continue
        try:
            os.mknod(dest, stat.S_IMODE(st.st_mode) | stat.S_IFMT(st.st_mode), st.st_rdev)
            os.chown(dest, st.st_uid, st.st_gid)
        except OSError:
            continue  # best effort, as a device may vanish meanwhile


def seccomp_program(cfg):
    """The compiled filter (``skiff.seccompFilter``) as a struct sock_fprog, or None."""
    insns = cfg["skiff"].get("seccompFilter")
    if not insns:
        return None
    filt = (SockFilter * len(insns))(*(SockFilter(*i) for i in insns))
    return SockFprog(len(insns), filt), filt  # keep the array alive with the struct


def load_seccomp(prog):
    # Needs no_new_privs (or CAP_SYS_ADMIN); from here on only execve and error reporting run.
    if prog is not None:
        check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog[0]), 0, 0), "prctl PR_SET_SECCOMP")


def set_rlimits(cfg):
    for rl in cfg["process"].get("rlimits", []):
        res = getattr(resource, rl["type"], None)
        if res is None:
            raise StartError("other", f"unknown rlimit {rl['type']}")
        _, cur_hard = resource.getrlimit(res)
        hard = rl["hard"] if cur_hard == resource.RLIM_INFINITY else min(rl["hard"], cur_hard)
        resource.setrlimit(res, (min(rl["soft"], hard), hard))


def _read_db(path):
    try:
        with open(path, "rb") as f:
            return [line.split(":") for line in f.read().decode("utf-8", "replace").splitlines()]
    except OSError:
        return []


def resolve_user(u):
    """(uid, gid, groups) from the config; names come from the container's /etc/passwd and /etc/group."""
    passwd, group = _read_db("/etc/passwd"), _read_db("/etc/group")
    uid, gid, name = u.get("uid", 0), u.get("gid"), None
    if "username" in u:
        uname, _, gname = u["username"].partition(":")
        gid = None
        if uname.isdigit():
            uid = int(uname)
        else:
            entry = next((p for p in passwd if len(p) > 3 and p[0] == uname), None)
            if entry is None:
                raise StartError("other", f"unable to find user {uname}: no matching entries in passwd file")
            uid, gid, name = int(entry[2]), int(entry[3]), uname
        if gname:
            if gname.isdigit():
                gid = int(gname)
            else:
                g = next((g for g in group if len(g) > 2 and g[0] == gname), None)
                if g is None:
                    raise StartError(
                        "other", f"unable to find group {gname}: no matching entries in group file"
                    )
                gid = int(g[2])
    if name is None:
        entry = next((p for p in passwd if len(p) > 3 and p[2] == str(uid)), None)
        if entry is not None:
            name = entry[0]
            if gid is None:
                gid = int(entry[3])
    if gid is None:
        gid = 0
    extra = list(u.get("additionalGids", []))
    for gname in u.get("additionalGroups", []):  # --group-add by name
        g = next((g for g in group if len(g) > 2 and g[0] == gname and g[2].isdigit()), None)
        if g is None:
            raise StartError("other", f"unable to find group {gname}: no matching entries in group file")
        extra.append(int(g[2]))
    if name:
        extra += [int(g[2]) for g in group if len(g) > 3 and name in g[3].split(",") and g[2].isdigit()]
    return uid, gid, sorted(set(extra) - {gid})


def switch_user(uid, gid, groups):
    # Groups and gid before uid: after setuid we could no longer change them.
    try:
        os.setgroups(groups)
        os.setgid(gid)
        os.setuid(uid)
    except OSError as e:
        raise StartError("other", f"switch to user {uid}:{gid}: {e.strerror}") from e


def find_command(name, env):
    """The path to exec, with Docker's wording and exit-code kind."""
    if "/" in name:
        if not os.path.exists(name):
            raise StartError("not-found", f'exec: "{name}": stat {name}: no such file or directory')
        if os.path.isdir(name) or not os.access(name, os.X_OK):
            raise StartError("not-executable", f'exec: "{name}": permission denied')
        return name
    path = next(
        (e[5:] for e in env if e.startswith("PATH=")),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    )
    denied = None
    for d in path.split(":"):
        cand = os.path.join(d or ".", name)
        if os.path.isfile(cand):
            if os.access(cand, os.X_OK):
                return cand
            denied = cand
    if denied:
        raise StartError("not-executable", f'exec: "{name}": permission denied')
    raise StartError("not-found", f'exec: "{name}": executable file not found in $PATH')


def setup_terminal(uid, size=None):
    """The process's terminal, made inside the container (runc's console socket): a pty of
    the container's own devpts instance, the slave as controlling terminal on fds 0-2, the
    master sent to the shim's monitor over CONSOLE_FD with SCM_RIGHTS. The host never opens
    a device node of the container."""
    try:
        master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        unlock = ctypes.c_int(0)
        check(libc.ioctl(master, TIOCSPTLCK, ctypes.byref(unlock)), "unlockpt")
        num = ctypes.c_uint(0)
        check(libc.ioctl(master, TIOCGPTN, ctypes.byref(num)), "ptsname")
        slave = os.open(f"/dev/pts/{num.value}", os.O_RDWR | os.O_NOCTTY)
        os.fchown(slave, uid, -1)  # the user's, group tty (devpts gid=5), mode 0620
        if size and size.get("height") and size.get("width"):  # OCI's process.consoleSize
            ws = (ctypes.c_ushort * 4)(size["height"], size["width"], 0, 0)
            check(libc.ioctl(slave, TIOCSWINSZ, ctypes.byref(ws)), "TIOCSWINSZ")
        os.setsid()
        check(libc.ioctl(slave, TIOCSCTTY, 0), "TIOCSCTTY")
        for fd in (0, 1, 2):
            os.dup2(slave, fd)
        os.close(slave)
        import _socket  # already loaded, before pivot_root (see run())

        console = _socket.socket(fileno=CONSOLE_FD)
        try:  # SCM_RIGHTS with one native int, as socket.send_fds sends it
            console.sendmsg([b"m"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, master.to_bytes(4, sys.byteorder))])
        finally:
            console.close()
        os.close(master)
    except OSError as e:
        raise StartError("other", f"set up the terminal: {e}") from e


def reset_signals():
    """Every catchable signal back to its default disposition (ignored signals survive execve)."""
    for sig in _signal.valid_signals():
        if sig not in (_signal.SIGKILL, _signal.SIGSTOP):
            try:
                _signal.signal(sig, _signal.SIG_DFL)
            except (OSError, ValueError):
                pass


def run(bundle):
    os.set_inheritable(SYNC_FD, False)
    # Early: nothing in the container may ptrace us or read our memory while we set up.
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    try:  # execsvc's marshal copy of config.json: json (and re) cost more to import than the rest
        with open(os.path.join(bundle, "config.marshal"), "rb") as f:
            cfg = marshal.loads(f.read())
    except FileNotFoundError:
        import json

        with open(os.path.join(bundle, "config.json"), "rb") as f:
            cfg = json.loads(f.read())
    proc = cfg["process"]
    if proc.get("terminal"):
        import _socket  # noqa: F401  (for setup_terminal, after pivot_root)
    # (A netns given by path was joined by the shim, before this process started.)
    join_namespaces(cfg)
    join_cgroups(cfg["skiff"]["cgroupProcs"])
    new_cgroup_namespace(cfg)
    userns_fd = make_userns(cfg)
    old_umask = os.umask(0)
    # Nothing we mount from here on may propagate back to the host (rslave: host mounts still
    # reach binds that ask for slave/shared propagation).
    mount("", "/", None, MS_REC | root_propagation(cfg))
    rootfs = cfg["root"]["path"]
    if userns_fd is None:
        mount_rootfs(cfg, rootfs)
    else:
        mount_rootfs_idmapped(cfg, rootfs, userns_fd)
    # The root mount must exist before anything is mounted inside it; /dev before /dev/pts.
    for m in cfg.get("mounts", []):
        mount_one(rootfs, m)
        if m["destination"] == "/dev":
            populate_dev(rootfs)
            if cfg["skiff"].get("privileged"):
                copy_host_devices(rootfs)
            make_devices(rootfs, cfg.get("linux", {}).get("devices", []))
    mount_user_mounts(rootfs, cfg.get("skiff", {}).get("userMounts", []))
    enter_rootfs(rootfs)
    # The container's /proc/sys, before it is made read-only; net.* in the container's netns.
    set_sysctls(cfg.get("linux", {}).get("sysctl", {}))
    os.umask(old_umask)
    if cfg.get("hostname"):
        sethostname(cfg["hostname"])
    set_rlimits(cfg)
    uid, gid, groups = resolve_user(proc.get("user", {}))  # needs the container's /etc: after pivot_root
    if proc.get("terminal"):
        setup_terminal(uid, proc.get("consoleSize"))  # after pivot_root: /dev/ptmx is the container's devpts
    cwd = proc.get("cwd") or "/"
    os.makedirs(cwd, exist_ok=True)  # as root, like Docker's WORKDIR
    if cfg["root"].get("readonly"):
        # Last of the mounts: binds (/etc/hosts, tmpfs, ...) on top keep their own flags.
        mount("", "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    seccomp = seccomp_program(cfg)
    enter_userns(userns_fd, cfg)
    if uid == 0:
        # Root stays root: switch groups while CAP_SETGID is still there (--cap-drop ALL).
        switch_user(uid, gid, groups)
    if security_hooks(cfg, seccomp):
        seccomp = None  # already loaded
    if uid != 0:
        switch_user(uid, gid, groups)
    try:
        os.chdir(cwd)
    except OSError as e:
        raise StartError("other", f"chdir to cwd {cwd!r}: {e.strerror}") from e
    env = proc.get("env", [])
    path = find_command(proc["args"][0], env)
    argv = proc["args"]
    if cfg["skiff"].get("init"):
        # `--init`: skiff-init (the host's, mounted read-only) runs the command as its child.
        path, argv = cfg["skiff"]["init"], [cfg["skiff"]["init"], "--", *argv]
    # Only stdio and the (close-on-exec) sync pipe may reach the user's command.
    os.closerange(SYNC_FD + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    envd = dict(e.split("=", 1) for e in env)
    # Ignored signals survive execve: Python ignores SIGPIPE and SIGXFSZ, and execsvc may
    # have been started with more ignored. The user's command starts with the defaults.
    reset_signals()
    # Seccomp as close to execve as possible: nothing after it needs a denied syscall.
    load_seccomp(seccomp)
    try:
        os.execve(path, argv, envd)
    except OSError as e:
        kind = (
            "not-executable" if e.errno in (13, 8) else "not-found" if e.errno == 2 else "other"
        )  # EACCES, ENOEXEC
        raise StartError(kind, f'exec: "{proc["args"][0]}": {e.strerror}') from e


def main():
    try:
        run(sys.argv[1])
    except StartError as e:
        os.write(SYNC_FD, f"{e.kind}\n{e}".encode())
    except BaseException as e:
        os.write(SYNC_FD, f"other\ninit: {type(e).__name__}: {e}".encode())
    os._exit(1)


if __name__ == "__main__":
    main()
