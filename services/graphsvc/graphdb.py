"""The GraphDB: container definitions, unique names, links as named edges, image tags.

Docker's graphdb model, in SQLite through sqlite-utils::

    containers(id TEXT PK            -- 64 hex
               name TEXT UNIQUE      -- without the leading "/"
               image_id TEXT         -- "sha256:<hex>"   (indexed, v2)
               config TEXT           -- JSON: the full container configuration
               created TEXT          -- RFC 3339, UTC
               labels TEXT)          -- JSON object
    edges(parent_id, child_id, name) -- `--link db:alias` on web: parent=web child=db name=alias
          PRIMARY KEY (parent_id, name); index on child_id (v2)
    tags(ref TEXT PK, image_id TEXT) -- "name:tag" -> image id (v3)
    volumes(name TEXT PK, driver, created, labels JSON, options JSON,
            anonymous INTEGER)       -- named and anonymous volumes (v4; skiff.graphsvc.volumes)
    schema_version(version INTEGER)  -- one row

Migrations are an ordered list (:data:`MIGRATIONS`); migration ``i`` takes a
database from version ``i`` to ``i + 1``, and each has its own test.

Concurrency: one connection per :class:`GraphDB`, opened with
``check_same_thread=False`` and guarded by an ``RLock`` held for every public
call, so gRPC worker threads serialise on it. Every multi-step write runs in
one transaction (``Database.atomic``). Constraint checks are done by querying
inside the transaction; ``sqlite3.IntegrityError`` is still caught as a
backstop (another process on the same file) and never inspected by text.
The file uses WAL so readers in other processes do not block the writer.
"""

from __future__ import annotations

import builtins
import json
import re
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from skiff.common.errors import (
    CONTAINER_NOT_FOUND,
    INVALID_NAME,
    NAME_IN_USE,
    Conflict,
    InvalidArgument,
    NotFound,
    SkiffError,
)
from skiff.common.faults import crash_point
from skiff.graphsvc.names import random_name

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
_ID_RE = re.compile(r"^[0-9a-f]{64}$")
_HEX_RE = re.compile(r"^[0-9a-f]+$")


@dataclass(frozen=True)
class ContainerRecord:
    """A container definition; empty ``id``/``name``/``created`` are filled in on create."""

    image_id: str
    config: dict[str, Any] = field(default_factory=dict)
    id: str = ""
    name: str = ""
    created: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Link:
    """A named edge: ``parent`` reaches ``child`` under ``name`` (``--link child:name`` on parent)."""

    parent_id: str
    child_id: str
    name: str


@dataclass(frozen=True)
class WalkEntry:
    """One container reached by :meth:`GraphDB.walk`; ``path`` is Docker's ``/web/db`` form."""

    path: str
    container_id: str
    depth: int


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def validate_name(name: str) -> str:
    """Strip one leading ``/`` and check Docker's name grammar."""
    bare = name[1:] if name.startswith("/") else name
    if not NAME_RE.match(bare):
        raise InvalidArgument(
            f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
            reason=INVALID_NAME,
        )
    return bare


def _name_conflict(name: str, holder: str) -> Conflict:
    return Conflict(
        f'Conflict. The container name "/{name}" is already in use by container "{holder}". '
        "You have to remove (or rename) that container to be able to reuse that name.",
        reason=NAME_IN_USE,
        metadata={"container_id": holder},
    )


# -- migrations --------------------------------------------------------------


def _m0_initial(db: sqlite_utils.Database) -> None:
    db["containers"].create(  # type: ignore[union-attr]
        {"id": str, "name": str, "image_id": str, "config": str, "created": str, "labels": str},
        pk="id",
        not_null={"id", "name", "image_id", "config", "created", "labels"},
    )
    db["containers"].create_index(["name"], unique=True)  # type: ignore[union-attr]
    db["edges"].create(  # type: ignore[union-attr]
        {"parent_id": str, "child_id": str, "name": str},
        pk=("parent_id", "name"),
        not_null={"parent_id", "child_id", "name"},
    )


def _m1_indexes(db: sqlite_utils.Database) -> None:
    db["containers"].create_index(["image_id"], if_not_exists=True)  # type: ignore[union-attr]
    db["edges"].create_index(["child_id"], if_not_exists=True)  # type: ignore[union-attr]


def _m2_tags(db: sqlite_utils.Database) -> None:
    db["tags"].create({"ref": str, "image_id": str}, pk="ref", not_null={"ref", "image_id"})  # type: ignore[union-attr]
    db["tags"].create_index(["image_id"])  # type: ignore[union-attr]


def _m3_volumes(db: sqlite_utils.Database) -> None:
    db["volumes"].create(  # type: ignore[union-attr]
        {"name": str, "driver": str, "created": str, "labels": str, "options": str, "anonymous": int},
        pk="name",
        not_null={"name", "driver", "created", "labels", "options", "anonymous"},
    )


#: Ordered; never reorder or edit an applied one, append a new one instead.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_m0_initial, _m1_indexes, _m2_tags, _m3_volumes]
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(db: sqlite_utils.Database) -> int:
    if "schema_version" not in db.table_names():
        return 0
    row = next(iter(db.query("SELECT version FROM schema_version")), None)
    return int(row["version"]) if row else 0


def migrate(db: sqlite_utils.Database, target: int = SCHEMA_VERSION) -> int:
    """Apply migrations from the current version up to ``target``, each in its own transaction."""
    with db.atomic():
        if "schema_version" not in db.table_names():
            db["schema_version"].create({"version": int})  # type: ignore[union-attr]
            db["schema_version"].insert({"version": 0})  # type: ignore[union-attr]
    version = schema_version(db)
    while version < target:
        with db.atomic():
            MIGRATIONS[version](db)
            version += 1
            db.execute("UPDATE schema_version SET version = ?", [version])
    return version


def open_database(path: Path | str) -> sqlite_utils.Database:
    """A sqlite-utils Database usable from several threads (the caller serialises)."""
    conn = sqlite3.connect(str(path), check_same_thread=False)
    db = sqlite_utils.Database(conn)
    if str(path) != ":memory:":
        db.enable_wal()
    # Every commit fsyncs the WAL: a record is on disk once its call returned, also across a
    # power cut (NORMAL, SQLite's usual choice with WAL, survives only a crash of the process).
    db.execute("PRAGMA synchronous = FULL")
    db.execute("PRAGMA busy_timeout = 5000")
    return db


#: Ids per ``IN (...)`` (SQLite allows 999 parameters in older builds).
_IN_CHUNK = 400


class GraphDB:
    """The container graph. Pass ``":memory:"`` for tests."""

    def __init__(self, path: Path | str):
        self.db = open_database(path)
        self._lock = threading.RLock()
        self._queue_lock = threading.Lock()
        self._queue: list[tuple[str, bool, Future[ContainerRecord]]] = []  # removals to commit together
        self._draining = False
        #: bumped by every write transaction (under the lock): names what list_rows reads
        self.generation = 0
        with self._lock:
            migrate(self.db)

    def close(self) -> None:
        with self._lock:
            self.db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite_utils.Database]:
        with self._lock, self.db.atomic():
            self.generation += 1
            yield self.db

    @contextmanager
    def locked(self) -> Iterator[GraphDB]:
        """Holds the lock across several calls: a read-modify-write of one record."""
        with self._lock:
            yield self

    def _row(self, sql: str, params: list[Any]) -> dict[str, Any] | None:
        return next(iter(self.db.query(sql, params)), None)

    @staticmethod
    def _record(row: dict[str, Any]) -> ContainerRecord:
        return ContainerRecord(
            id=row["id"],
            name=row["name"],
            image_id=row["image_id"],
            config=json.loads(row["config"]),
            created=row["created"],
            labels=json.loads(row["labels"]),
        )

    # -- containers ---------------------------------------------------------

    def create_container(self, record: ContainerRecord) -> ContainerRecord:
        """Store a new container; generates the id, a random name and ``created`` when empty."""
        name = validate_name(record.name) if record.name else ""
        cid = record.id or secrets.token_hex(32)
        if not _ID_RE.match(cid):
            raise InvalidArgument(f"invalid container id {cid!r}: expected 64 lowercase hex")
        # Plain statements on the connection (cached prepared by sqlite3): one transaction, one
        # commit, none of sqlite-utils' per-call schema look-ups.
        conn = self.db.conn
        with self._tx():
            if conn.execute("SELECT 1 FROM containers WHERE id = ?", (cid,)).fetchone():
                raise Conflict(f"container id {cid} already exists")
            if name:
                holder = conn.execute("SELECT id FROM containers WHERE name = ?", (name,)).fetchone()
                if holder:
                    raise _name_conflict(name, holder[0])
            else:
                for attempt in range(16):
                    name = random_name(attempt)
                    if not conn.execute("SELECT 1 FROM containers WHERE name = ?", (name,)).fetchone():
                        break
                else:  # pragma: no cover - 16 collisions in a row
                    name = f"{name}_{secrets.token_hex(4)}"
            stored = replace(record, id=cid, name=name, created=record.created or now_rfc3339())
            try:
                conn.execute(
                    "INSERT INTO containers (id, name, image_id, config, created, labels) VALUES (?, ?, ?, ?, ?, ?)",
                    (stored.id, stored.name, stored.image_id, json.dumps(stored.config, sort_keys=True),
                     stored.created, json.dumps(stored.labels, sort_keys=True)),
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"container {stored.id} or name /{stored.name} was created concurrently",
                               reason=NAME_IN_USE) from None
        return stored

    def check_name_free(self, name: str) -> None:
        """Conflict (NAME_IN_USE) when a container holds ``name`` (with or without ``/``)."""
        bare = validate_name(name)
        with self._lock:
            holder = self.db.conn.execute("SELECT id FROM containers WHERE name = ?", (bare,)).fetchone()
        if holder:
            raise _name_conflict(bare, holder[0])

    def _resolve(self, ref: str) -> dict[str, Any]:
        """Full id, then name (``/`` optional), then unique id prefix - Docker's order."""
        key = ref[1:] if ref.startswith("/") else ref
        if key:
            row = self._row("SELECT * FROM containers WHERE id = ?", [key])
            if row:
                return row
            row = self._row("SELECT * FROM containers WHERE name = ?", [key])
            if row:
                return row
            if _HEX_RE.match(key) and not ref.startswith("/"):
                sql = "SELECT * FROM containers WHERE substr(id, 1, ?) = ? LIMIT 2"
                rows = list(self.db.query(sql, [len(key), key]))
                if len(rows) > 1:
                    raise InvalidArgument(f"Multiple IDs found with provided prefix: {ref}")
                if rows:
                    return rows[0]
        raise NotFound(f"No such container: {ref}", reason=CONTAINER_NOT_FOUND)

    def get(self, ref: str) -> ContainerRecord:
        """By full id, name (with or without ``/``) or unique id prefix."""
        with self._lock:
            return self._record(self._resolve(ref))

    def get_many(self, refs: builtins.list[str]) -> builtins.list[ContainerRecord | SkiffError]:
        """:meth:`get` of each reference under one lock: the record or the error, in order."""
        out: builtins.list[ContainerRecord | SkiffError] = []
        with self._lock:
            rows: dict[str, dict[str, Any]] = {}
            for k in range(0, len(refs), _IN_CHUNK):  # full ids with one query
                part = refs[k:k + _IN_CHUNK]
                marks = ",".join("?" * len(part))
                rows.update((r["id"], r) for r in self.db.query(f"SELECT * FROM containers WHERE id IN ({marks})",
                                                                part))
            for ref in refs:
                try:
                    out.append(self._record(rows.get(ref) or self._resolve(ref)))
                except SkiffError as e:
                    out.append(e)
        return out

    def list_rows(self) -> tuple[list[dict[str, Any]], dict[str, list[Link]]]:
        """Every container's raw row (JSON columns as stored) and each parent's links, read
        under one lock with two queries (``ps`` of many containers)."""
        with self._lock:
            rows = list(self.db.query("SELECT * FROM containers ORDER BY created, id"))
            links: dict[str, list[Link]] = {}
            for r in self.db.query("SELECT * FROM edges ORDER BY name"):
                links.setdefault(r["parent_id"], []).append(Link(r["parent_id"], r["child_id"], r["name"]))
        return rows, links

    def list(self) -> list[ContainerRecord]:
        with self._lock:
            return [self._record(r) for r in self.db.query("SELECT * FROM containers ORDER BY created, id")]

    def update_config(
        self, ref: str, config: dict[str, Any], labels: dict[str, str] | None = None
    ) -> ContainerRecord:
        with self._tx():
            row = self._resolve(ref)
            updates: dict[str, Any] = {"config": json.dumps(config, sort_keys=True)}
            if labels is not None:
                updates["labels"] = json.dumps(labels, sort_keys=True)
            self.db["containers"].update(row["id"], updates)  # type: ignore[union-attr]
            return self._record(self._resolve(row["id"]))

    def rename(self, ref: str, new_name: str) -> ContainerRecord:
        """Edges reference ids, so links survive a rename."""
        name = validate_name(new_name)
        with self._tx():
            row = self._resolve(ref)
            holder = self._row("SELECT id FROM containers WHERE name = ?", [name])
            if holder and holder["id"] != row["id"]:
                raise _name_conflict(name, holder["id"])
            self.db["containers"].update(row["id"], {"name": name})  # type: ignore[union-attr]
            return self._record(self._resolve(row["id"]))

    def delete(self, ref: str, *, force: bool = False) -> ContainerRecord:
        """Remove a container and its edges; refuse while others link to it unless ``force``.

        Removals that arrive together share one commit (group commit): each is its own
        savepoint (all or nothing, and one that fails leaves the others alone), and each
        returns once the commit holding it is durable. A commit's fsync is milliseconds; so
        `rm` of 1000 containers at once waits for a few dozen commits, not 1000."""
        if self._lock._is_owned():  # type: ignore[attr-defined]  # the caller holds the lock: no waiting on others
            with self._tx():
                return self._delete_rows(ref, force)
        done: Future[ContainerRecord] = Future()
        with self._queue_lock:
            self._queue.append((ref, force, done))
            drain, self._draining = not self._draining, True
        if drain:  # nobody is committing: this thread does, for all that are queued meanwhile
            self._drain()
        return done.result()

    def delete_many(self, refs: builtins.list[str], *, force: bool = False
                    ) -> tuple[builtins.list[ContainerRecord], dict[str, SkiffError]]:
        """:meth:`delete` of many containers in one transaction (one commit, durable on return).
        A removal that fails (returned by reference: not found, linked to without ``force``)
        leaves the others alone; a failed commit raises and removes none. Full ids are found
        with one query and, with ``force``, deleted with two statements."""
        done: builtins.list[ContainerRecord] = []
        failed: dict[str, SkiffError] = {}
        with self._tx():
            rows: dict[str, dict[str, Any]] = {}
            for k in range(0, len(refs), _IN_CHUNK):
                part = refs[k:k + _IN_CHUNK]
                marks = ",".join("?" * len(part))
                rows.update((r["id"], r) for r in self.db.query(f"SELECT * FROM containers WHERE id IN ({marks})",
                                                                part))
            doomed: dict[str, dict[str, Any]] = {}
            for ref in refs:
                row = rows.get(ref)
                if row is None or not force:  # by name or prefix; or the link check of each
                    try:
                        if force:
                            row = self._resolve(ref)
                        else:
                            with self.db.atomic():  # a savepoint: rolled back alone on error
                                done.append(self._delete_rows(ref, force))
                            continue
                    except SkiffError as e:
                        failed[ref] = e
                        continue
                if row["id"] in doomed:
                    failed[ref] = NotFound(f"No such container: {ref}", reason=CONTAINER_NOT_FOUND)
                    continue
                doomed[row["id"]] = row
            ids = builtins.list(doomed)
            for k in range(0, len(ids), _IN_CHUNK):
                part = ids[k:k + _IN_CHUNK]
                marks = ",".join("?" * len(part))
                self.db.execute(f"DELETE FROM edges WHERE parent_id IN ({marks}) OR child_id IN ({marks})",
                                part + part)
                crash_point("graphsvc:delete-containers:mid-transaction")
                self.db.execute(f"DELETE FROM containers WHERE id IN ({marks})", part)
            done += [self._record(r) for r in doomed.values()]
        return done, failed

    def _drain(self) -> None:
        while True:
            with self._queue_lock:
                batch, self._queue = self._queue, []
                if not batch:
                    self._draining = False
                    return
            results: list[tuple[Future[ContainerRecord], ContainerRecord | None, BaseException | None]] = []
            try:
                with self._tx():
                    for ref, force, fut in batch:
                        try:
                            with self.db.atomic():  # a savepoint: rolled back alone on error
                                results.append((fut, self._delete_rows(ref, force), None))
                        except Exception as e:  # that removal's own error, reported to it
                            results.append((fut, None, e))
            except BaseException as e:  # the commit failed: none of them happened
                for _, _, fut in batch:
                    fut.set_exception(e)
                continue
            for fut, record, err in results:
                if err is not None:
                    fut.set_exception(err)
                else:
                    fut.set_result(record)  # type: ignore[arg-type]

    def _delete_rows(self, ref: str, force: bool) -> ContainerRecord:
        """The removal's statements; the caller holds the lock, in a transaction."""
        row = self._resolve(ref)
        cid = row["id"]
        dependants = [p.parent_id for p in self._links("child_id", cid)]
        if dependants and not force:
            names = [self._resolve(p)["name"] for p in dependants]
            raise Conflict(
                f"Conflict, cannot remove container /{row['name']}: it is linked from "
                + ", ".join(f"/{n}" for n in names),
                metadata={"container_id": cid, "linked_from": ",".join(dependants)},
            )
        self.db.execute("DELETE FROM edges WHERE parent_id = ? OR child_id = ?", [cid, cid])
        self.db.execute("DELETE FROM containers WHERE id = ?", [cid])
        return self._record(row)

    def containers_using_image(self, image_id: str) -> builtins.list[str]:
        with self._lock:
            return [r["id"] for r in self.db.query(
                "SELECT id FROM containers WHERE image_id = ? ORDER BY created, id", [image_id])]

    # -- links --------------------------------------------------------------

    def _links(self, column: str, cid: str) -> builtins.list[Link]:
        assert column in ("parent_id", "child_id")
        return [
            Link(r["parent_id"], r["child_id"], r["name"])
            for r in self.db.query(f"SELECT * FROM edges WHERE {column} = ? ORDER BY name", [cid])
        ]

    def link(self, parent: str, child: str, alias: str) -> Link:
        """``--link child:alias`` on ``parent``. The alias is unique per parent."""
        alias = validate_name(alias)
        with self._tx():
            p = self._resolve(parent)
            c = self._resolve(child)
            if p["id"] == c["id"]:
                raise InvalidArgument(f"cannot link container /{p['name']} to itself")
            existing = self._row(
                "SELECT child_id FROM edges WHERE parent_id = ? AND name = ?", [p["id"], alias]
            )
            if existing:
                raise Conflict(
                    f'Conflict. The link name "/{p["name"]}/{alias}" is already in use by container '
                    f'"{existing["child_id"]}".',
                    reason=NAME_IN_USE,
                    metadata={"container_id": existing["child_id"]},
                )
            self.db["edges"].insert({"parent_id": p["id"], "child_id": c["id"], "name": alias})  # type: ignore[union-attr]
            return Link(p["id"], c["id"], alias)

    def unlink(self, parent: str, alias: str) -> None:
        with self._tx():
            p = self._resolve(parent)
            if not self._row("SELECT 1 AS x FROM edges WHERE parent_id = ? AND name = ?", [p["id"], alias]):
                raise NotFound(f"No such link: /{p['name']}/{alias}")
            self.db.execute("DELETE FROM edges WHERE parent_id = ? AND name = ?", [p["id"], alias])

    def children(self, ref: str) -> builtins.list[Link]:
        """Containers ``ref`` links to."""
        with self._lock:
            return self._links("parent_id", self._resolve(ref)["id"])

    def parents(self, ref: str) -> builtins.list[Link]:
        """Containers that link to ``ref``."""
        with self._lock:
            return self._links("child_id", self._resolve(ref)["id"])

    def walk(self, ref: str, depth: int = -1) -> builtins.list[WalkEntry]:
        """Breadth-first over children up to ``depth`` edges (-1: unlimited); each container once."""
        with self._lock:
            root = self._resolve(ref)
            out = [WalkEntry(f"/{root['name']}", root["id"], 0)]
            seen = {root["id"]}
            frontier = out[:]
            level = 0
            while frontier and (depth < 0 or level < depth):
                level += 1
                nxt: builtins.list[WalkEntry] = []
                for entry in frontier:
                    for link in self._links("parent_id", entry.container_id):
                        if link.child_id in seen:
                            continue  # links may form cycles
                        seen.add(link.child_id)
                        e = WalkEntry(f"{entry.path}/{link.name}", link.child_id, level)
                        out.append(e)
                        nxt.append(e)
                frontier = nxt
            return out

    # -- image tags (used by ImageStore) -------------------------------------

    def set_tag(self, ref: str, image_id: str) -> str | None:
        """Point ``ref`` at ``image_id``; returns the image it pointed to before, if any."""
        with self._tx():
            old = self._row("SELECT image_id FROM tags WHERE ref = ?", [ref])
            self.db["tags"].upsert({"ref": ref, "image_id": image_id}, pk="ref")  # type: ignore[union-attr]
            return old["image_id"] if old else None

    def remove_tag(self, ref: str) -> bool:
        with self._tx():
            found = self._row("SELECT 1 AS x FROM tags WHERE ref = ?", [ref]) is not None
            self.db.execute("DELETE FROM tags WHERE ref = ?", [ref])
            return found

    def get_tag(self, ref: str) -> str | None:
        with self._lock:
            row = self.db.conn.execute("SELECT image_id FROM tags WHERE ref = ?", (ref,)).fetchone()
            return str(row[0]) if row else None

    def tags_for(self, image_id: str) -> builtins.list[str]:
        with self._lock:
            rows = self.db.query("SELECT ref FROM tags WHERE image_id = ? ORDER BY ref", [image_id])
            return [r["ref"] for r in rows]

    def all_tags(self) -> dict[str, str]:
        with self._lock:
            return {r["ref"]: r["image_id"] for r in self.db.query("SELECT ref, image_id FROM tags")}
