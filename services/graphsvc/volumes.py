"""Volumes: records in the GraphDB (table ``volumes``), data in ``<data-root>/volumes/<name>/_data``.

A volume is in use while any container record (running or not) mounts it, as
in Docker; that is read from the containers' stored mount points, under the
GraphDB's lock, so a create that mounts a volume and a removal of it never
interleave. Removal drops the record first, then renames the directory into a
staging place and deletes it: a crash leaves either the volume or garbage that
the next start clears, never half a volume under its name.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import os
import secrets
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skiff.common import prunefilter
from skiff.common.errors import (
    UNSUPPORTED_FILTER,
    VOLUME_IN_USE,
    VOLUME_NOT_FOUND,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from skiff.common.mounts import check_volume_name
from skiff.graphsvc.graphdb import GraphDB, now_rfc3339

#: Docker's label on anonymous volumes (API 1.42+).
ANONYMOUS_LABEL = "com.docker.volume.anonymous"


@dataclass(frozen=True)
class Volume:
    name: str
    mountpoint: str
    created: str
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    anonymous: bool = False
    driver: str = "local"
    #: containers that mount it; -1 when not computed
    ref_count: int = -1
    #: bytes of its files (hard links once); -1 when not computed
    size: int = -1


def disk_usage(root: Path) -> int:
    """Bytes of the files under ``root`` (st_size; a hard-linked file once; symlinks not
    followed), as Docker sizes a volume. A file that goes away during the walk is skipped."""
    total = 0
    seen: set[tuple[int, int]] = set()
    stack = [str(root)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
                continue
            if st.st_nlink > 1:
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


def _users(db: GraphDB) -> dict[str, list[str]]:
    """volume name -> ids of the containers whose record mounts it (caller holds the lock)."""
    users: dict[str, list[str]] = {}
    for rec in db.list():
        for m in rec.config.get("mounts", []):
            if m.get("type") == "volume" and m.get("name"):
                users.setdefault(m["name"], []).append(rec.id)
    return users


class VolumeStore:
    def __init__(self, db: GraphDB, root: Path):
        self.db = db
        self.root = Path(root)
        self.tmp = self.root / ".tmp"
        self.root.mkdir(parents=True, exist_ok=True, mode=0o701)
        self.tmp.mkdir(exist_ok=True, mode=0o700)
        for leftover in self.tmp.iterdir():  # removals a crash interrupted
            shutil.rmtree(leftover, ignore_errors=True)
        # A directory without a record is what a crash left between the two steps of a create or
        # a removal: never let a new volume of that name find old data in it.
        with self.db._lock:
            known = {r["name"] for r in self.db.db.query("SELECT name FROM volumes")}
        for d in self.root.iterdir():
            if d.name != self.tmp.name and d.name not in known:
                self._discard(d.name)

    @property
    def lock(self) -> Any:
        """The GraphDB's lock: held across 'mount it' and 'is it used' decisions."""
        return self.db._lock

    def data_path(self, name: str) -> Path:
        return self.root / name / "_data"

    def _volume(self, row: dict[str, Any], refs: int = -1) -> Volume:
        return Volume(name=row["name"], mountpoint=str(self.data_path(row["name"])), created=row["created"],
                      labels=json.loads(row["labels"]), options=json.loads(row["options"]),
                      anonymous=bool(row["anonymous"]), driver=row["driver"], ref_count=refs)

    def _row(self, name: str) -> dict[str, Any] | None:
        return next(iter(self.db.db.query("SELECT * FROM volumes WHERE name = ?", [name])), None)

    def create(self, name: str = "", labels: dict[str, str] | None = None, driver: str = "",
               options: dict[str, str] | None = None, anonymous: bool | None = None) -> Volume:
        """Idempotent for an existing name (returned unchanged, as Docker)."""
        return self.ensure(name, labels, driver, options, anonymous)[0]

    def ensure(self, name: str = "", labels: dict[str, str] | None = None, driver: str = "",
               options: dict[str, str] | None = None, anonymous: bool | None = None) -> tuple[Volume, bool]:
        """The volume, and whether it was made by this call."""
        if driver not in ("", "local"):
            raise InvalidArgument(f'volume driver "{driver}" is not supported: only "local"')
        if options:
            raise InvalidArgument(f"volume options are not supported by the local driver here: "
                                  f"{', '.join(sorted(options))}")
        if name:
            check_volume_name(name)
        else:
            name = secrets.token_hex(32)
            anonymous = True if anonymous is None else anonymous
        labels = dict(labels or {})
        if anonymous:
            labels.setdefault(ANONYMOUS_LABEL, "")
        with self.db._tx():
            row = self._row(name)
            if row is not None:
                return self._volume(row), False
            data = self.data_path(name)
            data.mkdir(parents=True, exist_ok=True, mode=0o755)
            os.chmod(data.parent, 0o701)
            self.db.db["volumes"].insert({  # type: ignore[union-attr]
                "name": name, "driver": "local", "created": now_rfc3339(),
                "labels": json.dumps(labels, sort_keys=True), "options": json.dumps(options or {}),
                "anonymous": int(bool(anonymous))})
            row = self._row(name)
            assert row is not None
            return self._volume(row), True

    def get(self, name: str) -> Volume:
        with self.lock:
            row = self._row(name)
            if row is None:
                raise NotFound(f"get {name}: no such volume", reason=VOLUME_NOT_FOUND)
            return self._volume(row, len(_users(self.db).get(name, [])))

    def list(self, filters: Iterable[tuple[str, str]] = (), with_size: bool = False) -> list[Volume]:
        by_key: dict[str, list[str]] = {}
        for key, value in filters:
            if key not in ("dangling", "name", "label", "driver"):
                raise InvalidArgument(f"invalid filter '{key}'", reason=UNSUPPORTED_FILTER)
            if key == "dangling" and value.lower() not in ("true", "false", "1", "0"):
                raise InvalidArgument(f"invalid filter 'dangling={value}'")
            by_key.setdefault(key, []).append(value)
        with self.lock:
            users = _users(self.db)
            rows = list(self.db.db.query("SELECT * FROM volumes ORDER BY name"))
            vols = [self._volume(r, len(users.get(r["name"], []))) for r in rows]
        vols = [v for v in vols if _matches(v, by_key)]
        if with_size:  # outside the lock: a walk of each volume's data
            vols = [dataclasses.replace(v, size=disk_usage(Path(v.mountpoint))) for v in vols]
        return vols

    def remove(self, name: str, force: bool = False) -> None:
        with self.db._tx():
            row = self._row(name)
            if row is None:
                if force:
                    return
                raise NotFound(f"get {name}: no such volume", reason=VOLUME_NOT_FOUND)
            users = _users(self.db).get(name, [])
            if users:
                raise FailedPrecondition(f"remove {name}: volume is in use - [{', '.join(users)}]",
                                         reason=VOLUME_IN_USE, metadata={"container_id": users[0]})
            self.db.db.execute("DELETE FROM volumes WHERE name = ?", [name])
        self._discard(name)

    def _discard(self, name: str) -> int:
        src = self.root / name
        if not src.exists():
            return 0
        size = _du(src)
        grave = self.tmp / f"rm-{uuid.uuid4().hex}"
        os.rename(src, grave)
        shutil.rmtree(grave, ignore_errors=True)
        return size

    def prune(self, all_: bool = False, filters: Iterable[tuple[str, str]] = ()) -> tuple[builtins.list[str], int]:
        """Docker's ``volume prune``: unused anonymous volumes (named ones too with ``all``, or the
        ``all=true`` filter) that the ``label`` / ``label!`` filters keep (skiff.common.prunefilter)."""
        pairs = list(filters)
        for key, value in pairs:
            if key == "all":
                if value.lower() not in ("true", "false", "1", "0"):
                    raise InvalidArgument(f"invalid filter 'all={value}'", reason=UNSUPPORTED_FILTER)
                all_ = all_ or value.lower() in ("true", "1")
        keep = prunefilter.parse([p for p in pairs if p[0] != "all"], ("label", "label!"))
        removed, reclaimed = [], 0
        for v in self.list([("dangling", "true")]):
            if not (all_ or v.anonymous) or not keep.matches_labels(v.labels):
                continue
            with self.db._tx():
                if _users(self.db).get(v.name) or self._row(v.name) is None:
                    continue  # mounted meanwhile, or gone
                self.db.db.execute("DELETE FROM volumes WHERE name = ?", [v.name])
            reclaimed += self._discard(v.name)
            removed.append(v.name)
        return removed, reclaimed

    def remove_anonymous(self, names: Iterable[str]) -> None:
        """``rm -v``: the given volumes, if anonymous and not used by another container."""
        for name in names:
            with self.db._tx():
                row = self._row(name)
                if row is None or not row["anonymous"] or _users(self.db).get(name):
                    continue
                self.db.db.execute("DELETE FROM volumes WHERE name = ?", [name])
            self._discard(name)


def _matches(v: Volume, by_key: dict[str, list[str]]) -> bool:
    for key, values in by_key.items():
        if key == "dangling":
            want = values[-1].lower() in ("true", "1")
            if (v.ref_count == 0) != want:
                return False
        elif key == "name":
            if not any(val in v.name for val in values):
                return False
        elif key == "driver":
            if v.driver not in values:
                return False
        elif key == "label":
            ok = False
            for val in values:
                lk, sep, lv = val.partition("=")
                if lk in v.labels and (not sep or v.labels[lk] == lv):
                    ok = True
            if not ok:
                return False
    return True


def _du(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total
