"""Resource, security and restart options of a HostConfig: checked at create, turned into TaskSpec fields.

Docker's rules and messages: ``--cap-add/--cap-drop ALL``, ``--privileged``
(every capability), ``--security-opt seccomp=…|no-new-privileges[=bool]``,
namespaced ``--sysctl`` keys only, ``--ulimit`` soft <= hard, ``--restart``.
"""

from __future__ import annotations

import json
import os

from skiff.apiserver import logopts
from skiff.common import errors
from skiff.exec.v1 import exec_pb2
from skiff.execsvc.options import check_sysctl
from skiff.execsvc.security import CAPS, DEFAULT_CAPS
from skiff.types.v1 import types_pb2

CPU_PERIOD = 100_000
RESTART_POLICIES = ("", "no", "on-failure", "always", "unless-stopped")
ULIMITS = ("core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc", "rss",
           "rtprio", "rttime", "sigpending", "stack", "as")


def _cap(name: str) -> str:
    up = name.upper()
    return up if up == "ALL" or up.startswith("CAP_") else f"CAP_{up}"


def capabilities(hc: types_pb2.HostConfig) -> list[str] | None:
    """The capability set (moby's TweakCapabilities), or None for Docker's default."""
    if not hc.cap_add and not hc.cap_drop:
        return None
    adds, drops = [_cap(c) for c in hc.cap_add], [_cap(c) for c in hc.cap_drop]
    for c in adds + drops:
        if c != "ALL" and c.removeprefix("CAP_") not in CAPS:
            raise errors.InvalidArgument(f'unknown capability: "{c}"')
    every = [f"CAP_{c}" for c in CAPS]
    if "ALL" in adds:
        base = every
    elif "ALL" in drops:
        base = []
    else:
        base = list(DEFAULT_CAPS)
    out = [c for c in base if "ALL" in adds or c not in drops]
    if "ALL" in adds and "ALL" in drops:
        out = []
    out += [c for c in adds if c != "ALL" and c not in out]
    return out


def security_options(hc: types_pb2.HostConfig) -> tuple[str, bool]:
    """(seccomp: "" / "unconfined" / profile JSON, allow new privileges)."""
    seccomp, allow = "", False
    for opt in hc.security_opt:
        key, sep, value = opt.partition("=")
        if not sep:
            key, sep, value = opt.partition(":")
        if key == "no-new-privileges":
            if value not in ("", "true", "false"):
                raise errors.InvalidArgument(f"invalid --security-opt: {opt!r}")
            allow = value == "false"
        elif key == "seccomp" and value:
            if value != "unconfined":
                try:
                    json.loads(value)
                except ValueError as e:
                    raise errors.InvalidArgument(f"Decoding seccomp profile failed: {e}") from None
            seccomp = value
        elif key in ("apparmor", "label") and value:
            continue  # no LSM support: accepted and ignored
        else:
            raise errors.InvalidArgument(f"invalid --security-opt 2: {opt!r}")
    return seccomp, allow


def validate(hc: types_pb2.HostConfig) -> None:
    """INVALID_ARGUMENT with Docker's message for the first bad option."""
    ncpu = os.cpu_count() or 1
    if hc.nano_cpus < 0 or hc.nano_cpus > ncpu * 1_000_000_000:
        raise errors.InvalidArgument(
            f"Range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs available")
    if hc.cpu_shares < 0:
        raise errors.InvalidArgument("invalid CPU shares: must not be negative")
    if hc.memory_swap > 0 and hc.memory_bytes == 0:
        raise errors.InvalidArgument("You should always set the Memory limit when using Memoryswap limit, see usage")
    if hc.memory_swap > 0 and hc.memory_swap < hc.memory_bytes:
        raise errors.InvalidArgument("Minimum memoryswap limit should be larger than memory limit, see usage")
    if hc.memory_reservation < 0 or (hc.memory_bytes and hc.memory_reservation > hc.memory_bytes):
        raise errors.InvalidArgument("Minimum memory limit can not be less than memory reservation limit, see usage")
    if hc.blkio_weight and not 10 <= hc.blkio_weight <= 1000:
        raise errors.InvalidArgument("Range of blkio weight is from 10 to 1000")
    if hc.shm_size < 0:
        raise errors.InvalidArgument("SHM size can not be less than 0")
    capabilities(hc)
    security_options(hc)
    for key in hc.sysctls:
        check_sysctl(key, hc.network_mode)
    for u in hc.ulimits:
        if u.name not in ULIMITS:
            raise errors.InvalidArgument(f"invalid ulimit type: {u.name}")
        if u.soft > u.hard:
            raise errors.InvalidArgument(
                f"ulimit soft limit must be less than or equal to hard limit: {u.soft} > {u.hard}")
    for target in hc.tmpfs:
        if not target.startswith("/"):
            raise errors.InvalidArgument(f"invalid mount path {target!r}: must be absolute")
    rp = hc.restart_policy
    if rp.name not in RESTART_POLICIES:
        raise errors.InvalidArgument(f"invalid restart policy '{rp.name}'")
    if rp.maximum_retry_count and rp.name != "on-failure":
        raise errors.InvalidArgument(f"maximum retry count cannot be used with restart policy '{rp.name}'")
    if rp.maximum_retry_count < 0:
        raise errors.InvalidArgument("maximum retry count cannot be negative")
    if hc.auto_remove and rp.name not in ("", "no"):
        raise errors.InvalidArgument("can't create 'AutoRemove' container with restart policy")


def resources(hc: types_pb2.HostConfig, spec: exec_pb2.TaskSpec) -> None:
    """The resource fields of ``spec`` from ``hc`` (also used by update)."""
    if hc.nano_cpus:
        spec.cpu_period = CPU_PERIOD
        spec.cpu_quota = hc.nano_cpus * CPU_PERIOD // 1_000_000_000
    spec.cpu_shares = hc.cpu_shares
    spec.cpuset_cpus = hc.cpuset_cpus
    spec.memory_swap = hc.memory_swap
    spec.memory_reservation = hc.memory_reservation
    spec.blkio_weight = hc.blkio_weight


def fill_task_spec(spec: exec_pb2.TaskSpec, hc: types_pb2.HostConfig) -> None:
    """Everything beyond memory/pids that execsvc needs from the HostConfig."""
    resources(hc, spec)
    caps = capabilities(hc)
    if caps is not None:
        spec.has_capabilities = True
        spec.capabilities.extend(caps)
    spec.privileged = hc.privileged
    spec.seccomp_profile, spec.allow_new_privileges = security_options(hc)
    spec.readonly_rootfs = hc.readonly_rootfs
    for target, opts in sorted(hc.tmpfs.items()):
        spec.tmpfs.append(types_pb2.Mount(type="tmpfs", source="tmpfs", target=target,
                                          options=[o for o in opts.split(",") if o]))
    spec.shm_size = hc.shm_size
    spec.init = hc.init
    spec.ulimits.extend(hc.ulimits)
    spec.group_add.extend(hc.group_add)
    for k, v in hc.sysctls.items():
        spec.sysctls[k] = v
    logopts.fill_task_spec(spec, hc.log_config)
