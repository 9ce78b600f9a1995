"""The run options beyond the basics: resource limits and security choices.

:class:`Options` rides on a :class:`~skiff.execsvc.spec.ContainerSpec`; it is
validated with it and :func:`apply` edits the OCI-shaped config that
``spec.build_config`` made (``linux.resources``, ``process.capabilities``,
``linux.seccomp``, ``root.readonly``, mounts, ``linux.sysctl``), so the init
only reads config.json.
"""

from __future__ import annotations

import json
import resource
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skiff.common.errors import InvalidArgument
from skiff.execsvc import security
from skiff.execsvc.cgroups import Resources

DEFAULT_SHM_SIZE = 64 * 1024 * 1024
#: Docker's rule (opts.ValidateSysctl): only keys the kernel namespaces may be set per container.
NAMESPACED_SYSCTLS = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                      "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced")
NAMESPACED_SYSCTL_PREFIXES = ("net.", "fs.mqueue.")
#: Docker's default --tmpfs options.
TMPFS_DEFAULTS = ("nosuid", "nodev", "noexec")


def check_sysctl(key: str, network_mode: str = "") -> None:
    if not (key in NAMESPACED_SYSCTLS or key.startswith(NAMESPACED_SYSCTL_PREFIXES)):
        raise InvalidArgument(f"sysctl '{key}' is not allowed")
    if key.startswith("net.") and network_mode == "host":
        raise InvalidArgument(f"sysctl '{key}' is not allowed in host network namespace")


def all_capabilities() -> list[str]:
    """Every capability execsvc itself may hand out (``--privileged``): its bounding set."""
    bounding = (1 << (max(security.CAPS.values()) + 1)) - 1
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            bounding = int(line.split()[1], 16)
    return [f"CAP_{name}" for name, n in security.CAPS.items() if bounding & (1 << n)]


@dataclass(frozen=True)
class Options:
    resources: Resources = field(default_factory=Resources)
    #: memory + swap, bytes; -1 unlimited, 0 the default
    memory_swap: int = 0
    #: the capability set; None: Docker's default
    capabilities: tuple[str, ...] | None = None
    privileged: bool = False
    #: "": the default profile, "unconfined": none, else a Docker-format JSON profile
    seccomp_profile: str = ""
    allow_new_privileges: bool = False
    readonly_rootfs: bool = False
    #: (mount point, comma-separated options)
    tmpfs: tuple[tuple[str, str], ...] = ()
    shm_size: int = 0
    sysctls: tuple[tuple[str, str], ...] = ()

    def validate(self, network_mode: str, rlimits: tuple[tuple[str, int, int], ...]) -> None:
        for cap in self.capabilities or ():
            if cap.removeprefix("CAP_") not in security.CAPS:
                raise InvalidArgument(f"unknown capability: {cap!r}")
        for key, _ in self.sysctls:
            check_sysctl(key, network_mode)
        for target, opts in self.tmpfs:
            if not target.startswith("/") or "," in target or "\n" in opts:
                raise InvalidArgument(f"invalid tmpfs mount {target!r}: want an absolute path")
        if self.shm_size < 0:
            raise InvalidArgument("shm size must not be negative")
        r = self.resources
        if r.cpu_period and not 1000 <= r.cpu_period <= 1000000:
            raise InvalidArgument("CPU cfs period must be between 1ms and 1s")
        if r.blkio_weight and not 10 <= r.blkio_weight <= 1000:
            raise InvalidArgument("blkio weight must be between 10 and 1000")
        for name, _soft, hard in rlimits:
            res = getattr(resource, name, None)
            if res is None:
                raise InvalidArgument(f"unknown ulimit {name.removeprefix('RLIMIT_').lower()}")
            host_hard = resource.getrlimit(res)[1]
            if host_hard != resource.RLIM_INFINITY and hard > host_hard:
                raise InvalidArgument(
                    f"ulimit {name.removeprefix('RLIMIT_').lower()}: hard limit {hard} is above "
                    f"the host's hard limit {host_hard}")
        if self.seccomp_profile not in ("", "unconfined"):
            seccomp_filter(self.seccomp_profile, list(self.capabilities or security.DEFAULT_CAPS))


def _docker_profile(profile: dict[str, Any], caps: list[str]) -> dict[str, Any]:
    """A Docker seccomp profile (archMap, includes/excludes) as the OCI shape compile_bpf takes."""
    archs = profile.get("architectures") or [a.get("architecture") for a in profile.get("archMap", [])]
    if archs and "SCMP_ARCH_X86_64" not in archs:
        raise InvalidArgument("seccomp profile: no rules for SCMP_ARCH_X86_64")
    have = {c if c.startswith("CAP_") else f"CAP_{c}" for c in caps}
    rules = []
    for rule in profile.get("syscalls", []):
        inc, exc = rule.get("includes", {}), rule.get("excludes", {})
        if inc.get("arches") and not {"amd64", "x86_64"} & set(inc["arches"]):
            continue
        if inc.get("caps") and not set(inc["caps"]) <= have:
            continue
        if exc.get("caps") and set(exc["caps"]) & have:
            continue
        if inc.get("minKernel"):
            continue
        names = rule.get("names") or ([rule["name"]] if rule.get("name") else [])
        rules.append({k: v for k, v in rule.items() if k not in ("includes", "excludes", "comment", "name")}
                     | {"names": names})
    out = {k: v for k, v in profile.items() if k in ("defaultAction", "defaultErrnoRet")}
    return out | {"architectures": ["SCMP_ARCH_X86_64"], "syscalls": rules}


def seccomp_filter(text: str, caps: list[str]) -> tuple[dict[str, Any], list[security.Insn]]:
    """(the OCI profile, its BPF program); InvalidArgument saying what is wrong."""
    try:
        profile = _docker_profile(json.loads(text), caps)
        return profile, security.compile_bpf(profile)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise InvalidArgument(f"invalid seccomp profile: {e}") from e


def _tmpfs_options(opts: str) -> list[str]:
    given = [o for o in opts.split(",") if o]
    out = [d for d in TMPFS_DEFAULTS if d.removeprefix("no") not in given and d not in given]
    return out + given


def apply(cfg: dict[str, Any], opts: Options) -> dict[str, Any]:
    """Edits and returns ``cfg`` (from spec.build_config) for ``opts``."""
    linux, proc = cfg["linux"], cfg["process"]
    res = linux["resources"]
    r = opts.resources
    if opts.memory_swap:
        res.setdefault("memory", {})["swap"] = opts.memory_swap
    if r.memory_reservation:
        res.setdefault("memory", {})["reservation"] = r.memory_reservation
    cpu = {k: v for k, v in (("quota", r.cpu_quota), ("period", r.cpu_period), ("shares", r.cpu_shares),
                             ("cpus", r.cpuset_cpus)) if v}
    if cpu:
        res["cpu"] = cpu
    if r.blkio_weight:
        res["blockIO"] = {"weight": r.blkio_weight}
    if opts.privileged:
        caps = all_capabilities()
    elif opts.capabilities is not None:
        caps = [c if c.startswith("CAP_") else f"CAP_{c}" for c in opts.capabilities]
    else:
        caps = None
    if caps is not None:
        proc["capabilities"] = {"bounding": caps, "effective": caps, "permitted": caps, "inheritable": [],
                                "ambient": []}
    proc["noNewPrivileges"] = not opts.allow_new_privileges
    if opts.privileged or opts.seccomp_profile == "unconfined":
        linux.pop("seccomp", None)
        cfg["skiff"]["seccompFilter"] = []
    elif opts.seccomp_profile:
        profile, prog = seccomp_filter(opts.seccomp_profile, caps or list(security.DEFAULT_CAPS))
        linux["seccomp"], cfg["skiff"]["seccompFilter"] = profile, prog
    if opts.privileged:
        linux["maskedPaths"], linux["readonlyPaths"] = [], []
        cfg["skiff"]["privileged"] = True
        for m in cfg["mounts"]:
            if m["destination"] == "/sys":
                m["options"] = [o for o in m["options"] if o != "ro"]
    cfg["root"]["readonly"] = opts.readonly_rootfs
    shm = opts.shm_size or DEFAULT_SHM_SIZE
    for m in cfg["mounts"]:
        if m["destination"] == "/dev/shm":
            m["options"] = [o for o in m["options"] if not o.startswith("size=")] + [f"size={shm // 1024}k"]
    for target, o in opts.tmpfs:
        cfg["mounts"].append({"destination": target, "type": "tmpfs", "source": "tmpfs",
                              "options": _tmpfs_options(o)})
    if opts.sysctls:
        linux["sysctl"] = dict(opts.sysctls)
    return cfg
