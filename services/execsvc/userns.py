"""``--userns-remap``: containers' root mapped to an unprivileged range of host ids.

As Docker: ``--userns-remap USER[:GROUP]`` (a name or a numeric id) takes the first
range of USER in ``/etc/subuid`` and of GROUP (default: USER) in ``/etc/subgid``;
``default`` means the user ``dockremap``, which must exist in both files (skiff does
not create it). Container uid 0 is the range's first host uid. The image layers are
not copied or chowned: the init mounts the overlay over an idmapped view of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skiff.common.errors import InvalidArgument

DEFAULT_USER = "dockremap"


@dataclass(frozen=True)
class IdMap:
    uid: int  # host uid of container uid 0
    gid: int
    size: int  # ids mapped (the smaller of the two ranges)


def _range(path: Path, names: tuple[str, ...]) -> tuple[int, int] | None:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in names and parts[1].isdigit() and parts[2].isdigit():
            return int(parts[1]), int(parts[2])
    return None


def _names(name: str, db: str) -> tuple[str, ...]:
    """The name and its numeric id (or the id and its name): subuid lines may use either."""
    import grp
    import pwd

    out = [name]
    try:
        if db == "passwd":
            out.append(str(pwd.getpwnam(name).pw_uid) if not name.isdigit() else pwd.getpwuid(int(name)).pw_name)
        else:
            out.append(str(grp.getgrnam(name).gr_gid) if not name.isdigit() else grp.getgrgid(int(name)).gr_name)
    except (KeyError, ValueError):
        pass
    return tuple(out)


def parse(spec: str, subuid: Path | None = None, subgid: Path | None = None) -> IdMap:
    """IdMap for ``--userns-remap``; InvalidArgument naming what is missing."""
    subuid = subuid or Path(os.environ.get("SKIFF_SUBUID_FILE", "/etc/subuid"))
    subgid = subgid or Path(os.environ.get("SKIFF_SUBGID_FILE", "/etc/subgid"))
    user, _, group = spec.partition(":")
    if user == "default":
        user = DEFAULT_USER
    group = group or user
    if not user:
        raise InvalidArgument("--userns-remap: a user name or id is needed")
    uids = _range(subuid, _names(user, "passwd"))
    gids = _range(subgid, _names(group, "group"))
    if uids is None:
        raise InvalidArgument(f"--userns-remap: no subordinate uid range for {user} in {subuid}")
    if gids is None:
        raise InvalidArgument(f"--userns-remap: no subordinate gid range for {group} in {subgid}")
    if uids[0] == 0 or gids[0] == 0:
        raise InvalidArgument("--userns-remap: a range starting at 0 would map container root to host root")
    return IdMap(uids[0], gids[0], min(uids[1], gids[1]))


def for_mode(idmap: IdMap | None, mode: str) -> IdMap | None:
    """The daemon's map for a container of ``--userns`` ``mode``: none under ``host`` (as Docker,
    the one per-container value: that container is not remapped, so ``--privileged`` and the
    host's namespaces are allowed for it)."""
    return None if mode == "host" else idmap


def apply(cfg: dict[str, Any], idmap: IdMap | None, privileged: bool, network_mode: str) -> dict[str, Any]:
    """config.json for a remapped container; Docker's refusals for host namespaces and --privileged."""
    if idmap is None:
        return cfg
    if privileged:
        raise InvalidArgument("privileged mode is incompatible with user namespaces. You must run the "
                              "container in the host namespace when running privileged mode")
    if network_mode == "host":
        raise InvalidArgument("cannot share the host's network namespace when user namespaces are enabled")
    kinds = {n["type"] for n in cfg["linux"]["namespaces"]}
    for kind, what in (("pid", "PID"), ("ipc", "IPC"), ("uts", "UTS")):
        if kind not in kinds:
            raise InvalidArgument(f"cannot share the host {what} namespace when user namespaces are enabled")
    linux = cfg["linux"]
    linux["uidMappings"] = [{"containerID": 0, "hostID": idmap.uid, "size": idmap.size}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": idmap.gid, "size": idmap.size}]
    linux["namespaces"].append({"type": "user"})
    # The network namespace is the host user namespace's: container root's CAP_NET_BIND_SERVICE
    # does not count there, so let everyone bind low ports in it (as Docker does for all containers).
    linux.setdefault("sysctl", {}).setdefault("net.ipv4.ip_unprivileged_port_start", "0")
    return cfg
