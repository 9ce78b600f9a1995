"""Namespace modes: which namespaces a container gets of its own, and which it shares.

``--pid host`` and ``--uts host`` drop the new pid / uts namespace; ``--ipc``
``host`` or ``container:<id>`` joins that IPC namespace (its ``/dev/shm`` is
bind-mounted, as Docker shares the donor's shm), ``none`` has no ``/dev/shm``;
``--cgroupns private`` gives the container a cgroup namespace rooted at its own
cgroup (made by the init *after* it joined the cgroup, so the root is right).
Everything ends up in config.json (OCI ``linux.namespaces``, with ``path`` for a
joined one) and in the shim's clone flags.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from skiff.common import errors
from skiff.common.errors import FailedPrecondition, InvalidArgument

CLONE_NEWCGROUP = 0x02000000
CONTAINER = "container:"


@dataclass(frozen=True)
class NsModes:
    pid: str = ""  # "" | "host"
    uts: str = ""  # "" | "host"
    ipc: str = ""  # "" | private | shareable | none | host | container:<id>
    cgroupns: str = ""  # "" (v2: private, v1: host) | private | host
    userns: str = ""  # "" (the daemon's --userns-remap, if any) | "host" (not remapped)

    def validate(self) -> None:
        if self.pid not in ("", "host"):
            raise InvalidArgument(f"invalid PID mode: {self.pid}")
        if self.uts not in ("", "host"):
            raise InvalidArgument(f"invalid UTS mode: {self.uts}")
        if self.cgroupns not in ("", "host", "private"):
            raise InvalidArgument(f"invalid cgroup namespace mode: {self.cgroupns}")
        if self.userns not in ("", "host"):
            raise InvalidArgument("--userns: invalid USER mode")
        if self.ipc not in ("", "private", "shareable", "none", "host") and not (
                self.ipc.startswith(CONTAINER) and len(self.ipc) > len(CONTAINER) and "/" not in self.ipc):
            raise InvalidArgument(f"invalid IPC mode: {self.ipc}")

    @property
    def ipc_donor(self) -> str:
        return self.ipc[len(CONTAINER):] if self.ipc.startswith(CONTAINER) else ""

    def drop_clone_flags(self, new_pid: int, new_uts: int, new_ipc: int) -> int:
        """The CLONE_NEW* flags (among those given) the shim must *not* use."""
        out = 0
        if self.pid == "host":
            out |= new_pid
        if self.uts == "host":
            out |= new_uts
        if self.ipc == "host" or self.ipc_donor:
            out |= new_ipc
        return out


def apply(cfg: dict[str, Any], modes: NsModes, donor_pid: Callable[[str], int], cgroup_version: int = 1
          ) -> dict[str, Any]:
    """Edits config.json's namespaces, hostname and /dev/shm for ``modes``; ``donor_pid(id)`` is
    the host pid of a running container (FailedPrecondition otherwise). Docker's default cgroup
    namespace: private on cgroup v2, the host's on v1."""
    linux = cfg["linux"]
    drop = set()
    if modes.pid == "host":
        drop.add("pid")
    if modes.uts == "host":
        drop.add("uts")
        cfg.pop("hostname", None)  # the host's: not ours to set (and sethostname is refused)
    shm_source = ""
    if modes.ipc == "host":
        drop.add("ipc")
        shm_source = "/dev/shm"
    elif modes.ipc_donor:
        pid = donor_pid(modes.ipc_donor)
        drop.add("ipc")
        linux["namespaces"].append({"type": "ipc", "path": f"/proc/{pid}/ns/ipc"})
        shm_source = f"/proc/{pid}/ns/mnt"
    linux["namespaces"] = [n for n in linux["namespaces"] if n["type"] not in drop or "path" in n]
    if modes.cgroupns == "private" or (not modes.cgroupns and cgroup_version == 2):
        linux["namespaces"].append({"type": "cgroup"})
    mounts = cfg["mounts"]
    for i, m in enumerate(mounts):
        if m["destination"] == "/dev/shm":
            if modes.ipc == "none":
                del mounts[i]
            elif shm_source.startswith("/proc/"):
                # The donor's /dev/shm lives in its mount namespace: the init clones it from there.
                mounts[i] = {"destination": "/dev/shm", "type": "bind", "source": "/dev/shm",
                             "options": ["rbind"], "skiffMountNamespace": shm_source}
            elif shm_source:
                mounts[i] = {"destination": "/dev/shm", "type": "bind", "source": shm_source,
                             "options": ["rbind", "nosuid", "noexec", "nodev"]}
            break
    cfg["skiff"]["ipcMode"] = modes.ipc or "private"
    return cfg


def host_hostname() -> str:
    """For /etc/hostname under ``--uts host``."""
    return socket.gethostname()


def runtime_donor(state: Callable[[str], Any]) -> Callable[[str], int]:
    """``donor_pid`` for :func:`apply` from a runtime's ``state``."""
    def donor_pid(cid: str) -> int:
        try:
            st = state(cid)
        except errors.NotFound:
            st = None
        if st is None or st.status != "running" or not st.pid:
            raise FailedPrecondition(f"cannot join IPC of a non running container: {cid}",
                                     reason=errors.CONTAINER_NOT_RUNNING)
        if not os.path.exists(f"/proc/{st.pid}/ns/ipc"):
            raise FailedPrecondition(f"cannot join IPC of a non running container: {cid}",
                                     reason=errors.CONTAINER_NOT_RUNNING)
        return int(st.pid)
    return donor_pid
