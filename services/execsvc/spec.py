"""The container description execsvc accepts, and the bundle written from it.

A :class:`ContainerSpec` is validated here, once, and turned into an OCI
runtime-spec-shaped ``config.json`` (so the exec driver stays replaceable by
runc/crun) plus skiff's own extensions under the ``"skiff"`` key, which the
init (``init.py``) reads. ``shim.conf`` carries the few values the C shim
needs, one ``key=value`` per line, so that its parser stays trivial.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skiff.common.errors import InvalidArgument
from skiff.execsvc import mounts as mountsmod
from skiff.execsvc import options as optionsmod
from skiff.execsvc import security
from skiff.execsvc.devices import DeviceMapping
from skiff.execsvc.nsmodes import NsModes

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Docker refuses memory limits below 6 MiB: the container could not even start.
MIN_MEMORY = 6 * 1024 * 1024
NETWORK_MODES = ("none", "host", "path")
#: Where `--init` puts skiff-init in the container (Docker: /sbin/docker-init).
INIT_TARGET = "/sbin/skiff-init"

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_USER_PART = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
_USER = re.compile(rf"^{_USER_PART}(:{_USER_PART})?$")
_GROUP = re.compile(rf"^{_USER_PART}$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$")
_ENV_KEY = re.compile(r"^[^=\0]+$")


@dataclass(frozen=True)
class RootfsMount:
    """Where the root filesystem comes from (graphsvc's mount description)."""

    type: str
    source: str
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class ContainerSpec:
    """Everything execsvc needs to run one container."""

    id: str
    args: tuple[str, ...]
    rootfs: RootfsMount
    env: tuple[str, ...] = ()
    cwd: str = "/"
    user: str = ""
    #: ``--group-add``: supplementary groups, gids or names (resolved by the init in the container's /etc/group)
    group_add: tuple[str, ...] = ()
    hostname: str = ""
    network_mode: str = "none"
    netns_path: str | None = None
    memory_limit: int = 0
    pids_limit: int = 0
    #: empty: ``<bundle>/<id>-json.log``
    log_path: str = ""
    #: "json-file" or "none"; json-file rotates at log_max_size bytes (0: never), keeping log_max_file files
    log_driver: str = "json-file"
    log_max_size: int = 0
    log_max_file: int = 1
    #: json-file ``compress=true``: rotated files are gzipped by the monitor
    log_compress: bool = False
    rlimits: tuple[tuple[str, int, int], ...] = field(default=())
    #: Contents bind-mounted at /etc/hosts, /etc/resolv.conf, /etc/hostname (empty: the image's).
    etc_hosts: str = ""
    etc_resolv_conf: str = ""
    etc_hostname: str = ""
    #: resources beyond memory/pids and the security choices (capabilities, seccomp, read-only root, ...)
    options: optionsmod.Options = field(default_factory=optionsmod.Options)
    #: -t: a pseudo-terminal on fds 0-2; -i: stdin kept open for AttachStdin (else /dev/null)
    terminal: bool = False
    open_stdin: bool = False
    #: (rows, cols) of the terminal from the start; (0, 0): unset
    console_size: tuple[int, int] = (0, 0)
    #: binds, volumes and tmpfs mounts (``-v``, ``--mount``, image VOLUMEs)
    mounts: tuple[mountsmod.UserMount, ...] = ()
    #: --pid/--uts/--ipc/--cgroupns
    ns: NsModes = field(default_factory=NsModes)
    #: --device
    devices: tuple[DeviceMapping, ...] = ()
    #: `--init`: the host's skiff-init, bind-mounted read-only at INIT_TARGET and run as PID 1
    init_path: str = ""
    #: the health check (health.config_from_proto), None for none
    healthcheck: dict[str, Any] | None = None

    def validate(self) -> None:
        """Raises InvalidArgument naming the first bad field."""
        if not _ID.match(self.id):
            raise InvalidArgument(f"invalid container id {self.id!r}: use [A-Za-z0-9_.-], at most 128")
        if not self.args or not self.args[0]:
            raise InvalidArgument("no command given")
        if any("\0" in a for a in self.args):
            raise InvalidArgument("command arguments must not contain NUL bytes")
        for item in self.env:
            key, sep, _ = item.partition("=")
            if not sep or not _ENV_KEY.match(key) or "\0" in item:
                raise InvalidArgument(f"invalid environment entry {item!r}: want KEY=value")
        if not self.cwd.startswith("/"):
            raise InvalidArgument(f"working directory {self.cwd!r} is not absolute")
        if self.user and not _USER.match(self.user):
            raise InvalidArgument(f"invalid user {self.user!r}: want name, uid, name:group or uid:gid")
        for group in self.group_add:
            if not _GROUP.match(group):
                raise InvalidArgument(f"invalid group {group!r} in --group-add: want a gid or a group name")
        if self.hostname and (len(self.hostname) > 64 or not _HOSTNAME.match(self.hostname)):
            raise InvalidArgument(f"invalid hostname {self.hostname!r}")
        if self.rootfs.type not in ("overlay", "bind"):
            raise InvalidArgument(f"unsupported root filesystem type {self.rootfs.type!r}")
        if any("," in o or "\0" in o for o in self.rootfs.options):
            raise InvalidArgument("root filesystem mount options must not contain ',' or NUL")
        if self.rootfs.type == "bind" and not self.rootfs.source.startswith("/"):
            raise InvalidArgument("a bind root filesystem needs an absolute source")
        if self.network_mode not in NETWORK_MODES:
            raise InvalidArgument(
                f"network mode {self.network_mode!r} is not one of {', '.join(NETWORK_MODES)}"
            )
        if (self.network_mode == "path") != bool(self.netns_path):
            raise InvalidArgument(
                "a network namespace path is needed exactly when the network mode is 'path'"
            )
        if self.netns_path and not self.netns_path.startswith("/"):
            raise InvalidArgument(f"network namespace path {self.netns_path!r} is not absolute")
        if self.memory_limit < 0 or 0 < self.memory_limit < MIN_MEMORY:
            raise InvalidArgument(f"memory limit {self.memory_limit} is below the minimum of 6 MiB")
        if self.pids_limit < 0:
            raise InvalidArgument(f"pids limit {self.pids_limit} is negative")
        if self.log_path and not self.log_path.startswith("/"):
            raise InvalidArgument(f"log path {self.log_path!r} is not absolute")
        if self.log_driver not in ("json-file", "none"):
            raise InvalidArgument(f"logger: no log driver named '{self.log_driver}' is registered")
        if self.log_max_size < 0 or self.log_max_file < 1:
            raise InvalidArgument("log rotation: max-size must not be negative and max-file at least 1")
        for name, soft, hard in self.rlimits:
            if not name.startswith("RLIMIT_") or soft > hard or soft < 0:
                raise InvalidArgument(f"invalid rlimit {name} soft={soft} hard={hard}")
        if self.init_path and not (self.init_path.startswith("/") and os.path.isfile(self.init_path)):
            raise InvalidArgument(f"init {self.init_path!r} is not an existing absolute path (run `make shim`)")
        self.options.validate(self.network_mode, self.rlimits)
        for m in self.mounts:
            m.validate()
        self.ns.validate()
        for d in self.devices:
            d.validate()


def clone_flags(spec: ContainerSpec) -> int:
    """Namespaces the shim creates; a netns *path* is joined instead (setns)."""
    flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC
    if spec.network_mode == "none":
        flags |= CLONE_NEWNET
    return flags & ~spec.ns.drop_clone_flags(CLONE_NEWPID, CLONE_NEWUTS, CLONE_NEWIPC)


def default_mounts() -> list[dict[str, Any]]:
    """Docker's standard container mounts, in the order they must be made (/dev before /dev/pts)."""
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
    ]


#: ContainerSpec field -> (file in the bundle, destination in the container).
ETC_FILES = {
    "etc_hosts": ("hosts", "/etc/hosts"),
    "etc_resolv_conf": ("resolv.conf", "/etc/resolv.conf"),
    "etc_hostname": ("hostname", "/etc/hostname"),
}


def etc_mounts(spec: ContainerSpec, bundle: Path) -> list[dict[str, Any]]:
    """Read-write binds of the bundle's generated /etc files (written by :func:`write_etc_files`)."""
    return [
        {"destination": dest, "type": "bind", "source": str(bundle / name), "options": ["bind", "rw"]}
        for attr, (name, dest) in ETC_FILES.items() if getattr(spec, attr)
    ]


def write_etc_files(spec: ContainerSpec, bundle: Path) -> None:
    """Written at every start (no fsync: a crash loses nothing the next start won't rewrite)."""
    bundle.mkdir(parents=True, exist_ok=True)
    for attr, (name, _) in ETC_FILES.items():
        if getattr(spec, attr):
            tmp = bundle / f".{name}.tmp"
            tmp.write_text(getattr(spec, attr))
            os.replace(tmp, bundle / name)


def _user(user: str, group_add: tuple[str, ...] = ()) -> dict[str, Any]:
    """Numeric users go in as numbers; names are resolved by init in the container's /etc/passwd.
    ``--group-add`` gids are ``additionalGids``; group names (``additionalGroups``, init.py only)
    are looked up in the container's /etc/group."""
    out = _user_ids(user)
    gids = [int(g) for g in group_add if g.isdigit()]
    names = [g for g in group_add if not g.isdigit()]
    if gids:
        out["additionalGids"] = gids
    if names:
        out["additionalGroups"] = names
    return out


def _user_ids(user: str) -> dict[str, Any]:
    name, _, group = user.partition(":")
    if not user:
        return {"uid": 0, "gid": 0}
    if name.isdigit() and (not group or group.isdigit()):
        out: dict[str, Any] = {"uid": int(name)}
        if group:
            out["gid"] = int(group)
        return out
    return {"uid": 0, "gid": 0, "username": user}


def init_mounts(spec: ContainerSpec) -> list[dict[str, Any]]:
    """`--init`: the host's skiff-init, read-only, where the init set-up execs it."""
    if not spec.init_path:
        return []
    return [{"destination": INIT_TARGET, "type": "bind", "source": spec.init_path,
             "options": ["bind", "ro", "nosuid", "nodev"]}]


def build_config(
    spec: ContainerSpec, bundle: Path, cgroup_procs: list[str], cgroups_path: str
) -> dict[str, Any]:
    """The OCI-shaped config.json for ``spec``; ``cgroup_procs`` are the files init joins."""
    env = list(spec.env)
    if not any(e.startswith("PATH=") for e in env):
        env.insert(0, f"PATH={DEFAULT_PATH}")
    if spec.terminal and not any(e.startswith("TERM=") for e in env):
        env.append("TERM=xterm")  # as Docker does for -t
    namespaces: list[dict[str, str]] = [{"type": t} for t in ("pid", "mount", "uts", "ipc")]
    if spec.network_mode == "none":
        namespaces.append({"type": "network"})
    elif spec.network_mode == "path":
        namespaces.append({"type": "network", "path": str(spec.netns_path)})
    resources: dict[str, Any] = {}
    seccomp = security.default_seccomp_profile()
    if spec.memory_limit:
        resources["memory"] = {"limit": spec.memory_limit}
    if spec.pids_limit:
        resources["pids"] = {"limit": spec.pids_limit}
    cfg = optionsmod.apply({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": spec.terminal,
            "consoleSize": {"height": spec.console_size[0], "width": spec.console_size[1]},
            "user": _user(spec.user, spec.group_add),
            "args": list(spec.args),
            "env": env,
            "cwd": spec.cwd,
            "rlimits": [{"type": n, "soft": s, "hard": h} for n, s, h in spec.rlimits],
            "capabilities": security.default_capabilities(),
            "noNewPrivileges": True,
        },
        "root": {"path": str(bundle / "rootfs"), "readonly": False},
        "hostname": spec.hostname or spec.id[:12],
        "mounts": default_mounts() + etc_mounts(spec, bundle) + init_mounts(spec),
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": cgroups_path,
            "resources": resources,
            "maskedPaths": list(security.MASKED_PATHS),
            "readonlyPaths": list(security.READONLY_PATHS),
            "seccomp": seccomp,
        },
        "skiff": {
            "rootfsMount": {
                "type": spec.rootfs.type,
                "source": spec.rootfs.source,
                "options": list(spec.rootfs.options),
            },
            "logPath": log_path(spec, bundle),
            "logDriver": spec.log_driver,
            "cgroupProcs": cgroup_procs,
            "networkMode": spec.network_mode,
            # linux.seccomp compiled on the host: the init only hands it to the kernel.
            "seccompFilter": security.compile_bpf(seccomp),
            # `--init`: exec this (mounted from the host) with the command as its arguments.
            "init": INIT_TARGET if spec.init_path else "",
            "healthcheck": spec.healthcheck,
        },
    }, spec.options)
    if spec.mounts:
        cfg["skiff"]["userMounts"] = mountsmod.config_entries(spec.mounts)
        cfg["linux"]["rootfsPropagation"] = mountsmod.root_propagation(spec.mounts)
    return cfg


def log_path(spec: ContainerSpec, bundle: Path) -> str:
    if spec.log_driver == "none":
        return str(bundle / "attach-json.log")
    return spec.log_path or str(bundle / f"{spec.id}-json.log")


def shim_conf(spec: ContainerSpec, bundle: Path, oom_file: str | None, cgroup_procs: Sequence[str] = ()) -> str:
    """The shim's configuration: values must not contain newlines (paths are validated)."""
    lines = [f"clone_flags={clone_flags(spec):#x}", f"log={log_path(spec, bundle)}"]
    if spec.netns_path:
        lines.append(f"netns={spec.netns_path}")
    if oom_file:
        lines.append(f"oom={oom_file}")
    lines += io_conf(spec.terminal, spec.open_stdin)
    lines += log_conf(spec)
    if spec.ns.pid == "host" and cgroup_procs:
        lines.append(f"kill_on_exit={cgroup_procs[0]}")
    lines += [f"cgroup_procs={p}" for p in cgroup_procs]  # joined early by the monitor
    if any("\n" in line for line in lines):
        raise InvalidArgument("paths must not contain newlines")
    return "\n".join(lines) + "\n"


def io_conf(terminal: bool, open_stdin: bool) -> list[str]:
    """The shim's interactive I/O lines (``tty=1``, ``stdin=1``)."""
    return (["tty=1"] if terminal else []) + (["stdin=1"] if open_stdin else [])


#: With the ``none`` driver the shim still writes a small log in the bundle, for attached
#: clients only (attach reads the log); ``logs`` refuses it and ``rm`` removes it.
NONE_DRIVER_LOG = (1024 * 1024, 2)


def log_conf(spec: ContainerSpec) -> list[str]:
    """The shim's log settings: rotation size and file count."""
    size, files = NONE_DRIVER_LOG if spec.log_driver == "none" else (spec.log_max_size, spec.log_max_file)
    if not size:
        return []
    compress = ["log_compress=1"] if spec.log_compress and spec.log_driver != "none" else []
    return [f"log_max_size={size}", f"log_max_file={files}", *compress]


def write_atomic(path: Path, data: str, *, durable: bool = True) -> None:
    """tmp + fsync + rename: a crash leaves the old file or the new one, never half of one.

    ``durable=False`` skips the fsync, for run-time state under the exec root (tmpfs in
    production, gone at reboot anyway): the rename alone survives the crash of a process.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: Path, obj: Any, *, durable: bool = True) -> None:
    write_atomic(path, json.dumps(obj, indent=1) + "\n", durable=durable)
