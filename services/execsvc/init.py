"""The container's PID 1 until it execs the user's command.

Run by skiff-shim inside the new namespaces as ``python3 -I -S init.py
<bundle>``; reads ``<bundle>/config.json``. stdlib only and few imports, for
a fast start. Every module is imported at the top: after pivot_root the
host's Python library is out of reach.

fd 3 is the sync pipe to the shim. We mark it close-on-exec, so a successful
execve of the user's command closes it (the shim reads EOF = started). On
failure we write ``<kind>\\n<message>`` to it (kind: ``not-found``,
``not-executable`` or ``other``) and exit.
"""

import ctypes
import json
import os
import resource
import signal
import stat
import sys

SYNC_FD = 3

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
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2
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

libc = ctypes.CDLL(None, use_errno=True)


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]


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


def mount_rootfs(cfg, rootfs):
    m = cfg["skiff"]["rootfsMount"]
    if m["type"] == "bind":
        mount(m["source"], rootfs, None, MS_BIND | MS_REC)
    else:
        mount(m["source"], rootfs, m["type"], 0, ",".join(m["options"]))


def mount_one(rootfs, m):
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


def run(bundle):
    os.set_inheritable(SYNC_FD, False)
    # Early: nothing in the container may ptrace us or read our memory while we set up.
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    with open(os.path.join(bundle, "config.json"), "rb") as f:
        cfg = json.loads(f.read())
    proc = cfg["process"]
    # (A netns given by path was joined by the shim, before this process started.)
    join_cgroups(cfg["skiff"]["cgroupProcs"])
    old_umask = os.umask(0)
    # Nothing we mount from here on may propagate back to the host.
    mount("", "/", None, MS_REC | MS_PRIVATE)
    rootfs = cfg["root"]["path"]
    mount_rootfs(cfg, rootfs)
    # The root mount must exist before anything is mounted inside it; /dev before /dev/pts.
    for m in cfg.get("mounts", []):
        mount_one(rootfs, m)
        if m["destination"] == "/dev":
            populate_dev(rootfs)
            if cfg["skiff"].get("privileged"):
                copy_host_devices(rootfs)
    enter_rootfs(rootfs)
    # The container's /proc/sys, before it is made read-only; net.* in the container's netns.
    set_sysctls(cfg.get("linux", {}).get("sysctl", {}))
    os.umask(old_umask)
    if cfg.get("hostname"):
        sethostname(cfg["hostname"])
    set_rlimits(cfg)
    uid, gid, groups = resolve_user(proc.get("user", {}))  # needs the container's /etc: after pivot_root
    cwd = proc.get("cwd") or "/"
    os.makedirs(cwd, exist_ok=True)  # as root, like Docker's WORKDIR
    if cfg["root"].get("readonly"):
        # Last of the mounts: binds (/etc/hosts, tmpfs, ...) on top keep their own flags.
        mount("", "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    seccomp = seccomp_program(cfg)
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
    for sig in signal.valid_signals():
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
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
