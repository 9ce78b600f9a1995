"""``-v`` and ``--mount``: parsing and validation, with Docker's rules and messages.

Shared by the CLI (which parses ``--mount``'s CSV, as Docker's client does) and
graphsvc (which parses ``-v`` strings, validates both at create and resolves
them into mount points). Pure functions over ``skiff.types.v1.MountPoint``.

Docker's differences kept on purpose: a ``-v`` bind source that does not exist
is created (``create_host_path``), a ``--mount`` one is an error; ``-v`` without
a source is an anonymous volume; propagation applies to binds only; ``nocopy``
to volumes only.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable, Iterable

from skiff.common.errors import InvalidArgument
from skiff.types.v1 import types_pb2

TYPES = ("bind", "volume", "tmpfs")
PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")
DEFAULT_PROPAGATION = "rprivate"
VOLUME_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
#: ``--mount`` keys (aliases folded): the ones taking no value are booleans.
_BOOL_KEYS = {"readonly", "volume-nocopy", "bind-nonrecursive"}
_KEYS = {"type", "source", "target", "readonly", "bind-propagation", "bind-nonrecursive", "volume-nocopy",
         "volume-label", "volume-driver", "volume-opt", "tmpfs-size", "tmpfs-mode", "consistency"}
_ALIASES = {"src": "source", "dst": "target", "destination": "target", "ro": "readonly"}
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def check_volume_name(name: str) -> None:
    if not VOLUME_NAME.match(name):
        raise InvalidArgument(
            f'"{name}" includes invalid characters for a local volume name, only '
            '"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host directory, use absolute path')


def _bool(key: str, value: str | None) -> bool:
    if value is None:
        return True
    v = value.strip().lower()
    if v in ("1", "t", "true"):
        return True
    if v in ("0", "f", "false"):
        return False
    raise InvalidArgument(f"invalid value for {key}: {value}")


def parse_size(text: str) -> int:
    """go-units RAMInBytes: ``64m``, ``1g``, ``512k``, ``1024``."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgtKMGT]?)[iI]?[bB]?\s*", text)
    if not m:
        raise InvalidArgument(f"invalid size: '{text}'")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_mount_flag(text: str) -> types_pb2.MountPoint:
    """One ``--mount`` value (comma-separated key=value, as Docker's CLI reads it)."""
    mp = types_pb2.MountPoint(type="volume")
    readonly: bool | None = None
    for field in (f for f in _csv(text)):
        key, sep, value = field.partition("=")
        key = _ALIASES.get(key.strip().lower(), key.strip().lower())
        if key not in _KEYS:
            raise InvalidArgument(f"unexpected key '{key}' in '{field}'")
        if not sep and key not in _BOOL_KEYS:
            raise InvalidArgument(f"invalid field '{field}' must be a key=value pair")
        val: str | None = value if sep else None
        if key == "type":
            mp.type = value.strip().lower()
        elif key == "source":
            mp.name = value
        elif key == "target":
            mp.destination = value
        elif key == "readonly":
            readonly = _bool(key, val)
        elif key == "bind-propagation":
            mp.propagation = value.strip().lower()
        elif key == "volume-nocopy":
            mp.nocopy = _bool(key, val)
        elif key == "volume-label":
            lk, _, lv = value.partition("=")
            mp.volume_labels[lk] = lv
        elif key == "volume-driver":
            if value not in ("", "local"):
                raise InvalidArgument(f'volume driver "{value}" is not supported: only "local"')
        elif key == "tmpfs-size":
            mp.tmpfs_size = parse_size(value)
        elif key == "tmpfs-mode":
            try:
                mp.tmpfs_mode = int(value, 8)
            except ValueError:
                raise InvalidArgument(f"invalid value for {key}: {value}") from None
        # bind-nonrecursive, volume-opt, consistency: accepted, no effect here.
    mp.read_only = bool(readonly)
    if not mp.destination:
        raise InvalidArgument("target is required")
    return mp


def _csv(text: str) -> list[str]:
    """Fields of a CSV line (Docker's --mount is read with encoding/csv: quotes allowed)."""
    import csv

    rows = list(csv.reader([text]))
    return [f for f in (rows[0] if rows else []) if f]


def parse_bind(spec: str) -> types_pb2.MountPoint:
    """One ``-v``: ``/ctr``, ``src:/ctr`` or ``src:/ctr:mode`` (src a host path or a volume name)."""
    parts = spec.split(":")
    if len(parts) > 3 or any(p == "" for p in parts):
        raise InvalidArgument(f"invalid volume specification: '{spec}'")
    mode = ""
    if len(parts) == 1:
        source, dest = "", parts[0]
    elif len(parts) == 2:
        source, dest = parts
    else:
        source, dest, mode = parts
    kind = "bind" if source.startswith("/") else "volume"
    if source and kind == "volume" and not source.startswith((".", "~")):
        check_volume_name(source)
    elif source and kind == "volume":
        raise InvalidArgument(f"invalid volume specification: '{spec}': a host path must be absolute")
    if not dest.startswith("/"):
        raise InvalidArgument(f"invalid volume specification: '{spec}': invalid mount config for type "
                              f'"{kind}": invalid mount path: \'{dest}\' mount path must be absolute')
    mp = types_pb2.MountPoint(type=kind, name=source, destination=dest, mode=mode,
                              create_host_path=kind == "bind")
    for opt in (o for o in mode.split(",") if o):
        if opt in ("ro", "rw"):
            mp.read_only = opt == "ro"
        elif opt in PROPAGATIONS and kind == "bind":
            mp.propagation = opt
        elif opt == "nocopy" and kind == "volume":
            mp.nocopy = True
        elif opt in ("z", "Z"):
            continue  # SELinux relabelling: no LSM here
        else:
            raise InvalidArgument(f"invalid mode: {mode}")
    return mp


def _bad(mp: types_pb2.MountPoint, what: str) -> InvalidArgument:
    return InvalidArgument(f'invalid mount config for type "{mp.type}": {what}')


def validate(mp: types_pb2.MountPoint, exists: Callable[[str], bool] = os.path.exists) -> None:
    """Docker's ValidateMountConfig for one mount (a ``--mount``, or a parsed ``-v``)."""
    if mp.type not in TYPES:
        raise _bad(mp, "mount type unknown")
    dest = mp.destination
    if not dest.startswith("/"):
        raise _bad(mp, f"invalid mount path: '{dest}' mount path must be absolute")
    if posixpath.normpath(dest) == "/":
        raise _bad(mp, "invalid specification: destination can't be '/'")
    if "\0" in dest or "\0" in mp.name or "\n" in dest:
        raise _bad(mp, "paths must not contain NUL or newline")
    if mp.type == "bind":
        if not mp.name:
            raise _bad(mp, "field Source must not be empty")
        if not mp.name.startswith("/"):
            raise _bad(mp, f"invalid mount path: '{mp.name}' mount path must be absolute")
        if mp.nocopy or mp.volume_labels:
            raise _bad(mp, "field VolumeOptions must not be specified")
        if mp.tmpfs_size or mp.tmpfs_mode:
            raise _bad(mp, "field TmpfsOptions must not be specified")
        if mp.propagation and mp.propagation not in PROPAGATIONS:
            raise _bad(mp, f"invalid propagation mode: {mp.propagation}")
        if not mp.create_host_path and not exists(mp.name):
            raise _bad(mp, f"bind source path does not exist: {mp.name}")
    elif mp.type == "volume":
        if mp.propagation:
            raise _bad(mp, "field BindOptions must not be specified")
        if mp.tmpfs_size or mp.tmpfs_mode:
            raise _bad(mp, "field TmpfsOptions must not be specified")
        if mp.name:
            check_volume_name(mp.name)
    else:
        if mp.name:
            raise _bad(mp, "field Source must not be specified")
        if mp.propagation:
            raise _bad(mp, "field BindOptions must not be specified")
        if mp.nocopy or mp.volume_labels:
            raise _bad(mp, "field VolumeOptions must not be specified")
        if mp.tmpfs_mode > 0o7777:
            raise _bad(mp, f"invalid tmpfs mode {oct(mp.tmpfs_mode)}")
        if mp.tmpfs_size < 0:
            raise _bad(mp, "tmpfs size must not be negative")


def collect(binds: Iterable[str], mounts: Iterable[types_pb2.MountPoint],
            exists: Callable[[str], bool] = os.path.exists) -> list[types_pb2.MountPoint]:
    """``-v`` and ``--mount`` as one validated list; a destination given twice is refused."""
    out: list[types_pb2.MountPoint] = []
    for spec in binds:
        mp = parse_bind(spec)
        validate(mp, exists)
        out.append(mp)
    for given in mounts:
        mp = types_pb2.MountPoint()
        mp.CopyFrom(given)
        mp.create_host_path = False
        validate(mp, exists)
        out.append(mp)
    seen: set[str] = set()
    for mp in out:
        mp.destination = clean(mp.destination)
        if mp.destination in seen:
            raise InvalidArgument(f"Duplicate mount point: {mp.destination}")
        seen.add(mp.destination)
    return out


def clean(path: str) -> str:
    """An absolute path without ``.``, ``..`` or doubled slashes (posixpath keeps a leading ``//``)."""
    return posixpath.normpath("/" + path.lstrip("/"))


def sort_key(mp: types_pb2.MountPoint) -> tuple[int, str]:
    """Parents before children (Docker sorts by the number of path components)."""
    return (len([p for p in mp.destination.split("/") if p]), mp.destination)
