"""The container's binds, volumes and tmpfs mounts: checked here, made by the init.

graphsvc resolved them at create (a volume is a bind of its ``_data``
directory); execsvc checks them once more, creates a missing ``-v`` bind source
(Docker's behaviour, at start) and puts them into ``config.json`` as
``skiff.userMounts``, which ``init.mount_user_mounts`` mounts inside the
container's mount namespace, every destination resolved inside its root.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from typing import Any

from skiff.common.errors import InvalidArgument

PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")


@dataclass(frozen=True)
class UserMount:
    type: str  # bind | volume | tmpfs
    destination: str
    source: str = ""
    read_only: bool = False
    propagation: str = ""
    #: fill an empty volume from the image's content at the destination
    copy_up: bool = False
    create_host_path: bool = False
    tmpfs_size: int = 0
    tmpfs_mode: int = 0
    name: str = ""

    def validate(self) -> None:
        if self.type not in ("bind", "volume", "tmpfs"):
            raise InvalidArgument(f"mount type {self.type!r} is not one of bind, volume, tmpfs")
        for what, path in (("destination", self.destination), ("source", self.source)):
            if "\0" in path or "\n" in path:
                raise InvalidArgument(f"mount {what} {path!r} contains NUL or a newline")
        if not self.destination.startswith("/") or posixpath.normpath(self.destination) == "/":
            raise InvalidArgument(f"invalid mount destination {self.destination!r}: want an absolute path, not /")
        if self.type != "tmpfs" and not self.source.startswith("/"):
            raise InvalidArgument(f"mount source {self.source!r} of {self.destination} is not absolute")
        if self.propagation and self.propagation not in PROPAGATIONS:
            raise InvalidArgument(f"invalid propagation {self.propagation!r}")
        if self.tmpfs_mode < 0 or self.tmpfs_mode > 0o7777 or self.tmpfs_size < 0:
            raise InvalidArgument(f"invalid tmpfs options for {self.destination}")


def from_proto(items: Any) -> tuple[UserMount, ...]:
    return tuple(UserMount(type=m.type, destination=m.destination, source=m.source, read_only=m.read_only,
                           propagation=m.propagation, copy_up=m.type == "volume" and not m.nocopy,
                           create_host_path=m.create_host_path, tmpfs_size=m.tmpfs_size,
                           tmpfs_mode=m.tmpfs_mode, name=m.name) for m in items)


def prepare_host_paths(mounts: tuple[UserMount, ...]) -> None:
    """``-v /missing:/x`` creates /missing (a directory), as Docker does at start."""
    for m in mounts:
        if m.type == "volume" or (m.type == "bind" and m.create_host_path):
            if not os.path.lexists(m.source):
                os.makedirs(m.source, mode=0o755, exist_ok=True)
        elif m.type == "bind" and not os.path.exists(m.source):
            raise InvalidArgument(f'invalid mount config for type "bind": bind source path does not exist: '
                                  f"{m.source}")


def config_entries(mounts: tuple[UserMount, ...]) -> list[dict[str, Any]]:
    """``skiff.userMounts`` for the init, parents before children."""
    out = []
    for m in sorted(mounts, key=lambda m: (len([p for p in m.destination.split("/") if p]), m.destination)):
        entry: dict[str, Any] = {"type": m.type, "destination": posixpath.normpath(m.destination),
                                 "readonly": m.read_only}
        if m.type == "tmpfs":
            opts = []
            if m.tmpfs_size:
                opts.append(f"size={m.tmpfs_size}")
            opts.append(f"mode={m.tmpfs_mode or 0o1777:o}")
            entry["data"] = ",".join(opts)
        else:
            entry["source"] = m.source
            entry["propagation"] = m.propagation or "rprivate"
            entry["copyUp"] = m.copy_up
        out.append(entry)
    return out


def root_propagation(mounts: tuple[UserMount, ...]) -> str:
    """``rslave`` when a bind must receive (or share) mounts from the host, else ``rprivate``."""
    if any(m.propagation in ("shared", "rshared", "slave", "rslave") for m in mounts):
        return "rslave"
    return "rprivate"
