"""GraphDB: names, lookups, links as edges, deletes, migrations. Each test has its own database."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
import sqlite_utils

from skiff.common.errors import (
    CONTAINER_NOT_FOUND,
    INVALID_NAME,
    NAME_IN_USE,
    Conflict,
    InvalidArgument,
    NotFound,
)
from skiff.graphsvc import graphdb
from skiff.graphsvc.graphdb import ContainerRecord, GraphDB

IMG = "sha256:" + "ab" * 32


@pytest.fixture
def db() -> GraphDB:
    return GraphDB(":memory:")


def mk(db: GraphDB, name: str = "", image: str = IMG, **config: object) -> ContainerRecord:
    return db.create_container(ContainerRecord(image_id=image, name=name, config=dict(config)))


def test_create_fills_id_name_created(db: GraphDB) -> None:
    c = mk(db, cmd=["sh"])
    assert re.fullmatch(r"[0-9a-f]{64}", c.id)
    assert re.fullmatch(r"[a-z]+_[a-z]+\d?", c.name)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", c.created)
    assert db.get(c.id) == c
    assert db.get(c.id).config == {"cmd": ["sh"]}


def test_unique_names(db: GraphDB) -> None:
    a = mk(db, "web")
    with pytest.raises(Conflict) as ei:
        mk(db, "/web")
    e = ei.value
    assert e.reason == NAME_IN_USE
    assert e.metadata == {"container_id": a.id}
    assert e.message == (
        f'Conflict. The container name "/web" is already in use by container "{a.id}". '
        "You have to remove (or rename) that container to be able to reuse that name."
    )
    assert len(db.list()) == 1


@pytest.mark.parametrize("bad", ["a", "-x", "_x", "has space", "a/b", "ü-name", "/"])
def test_invalid_names(db: GraphDB, bad: str) -> None:
    with pytest.raises(InvalidArgument) as ei:
        mk(db, bad)
    assert ei.value.reason == INVALID_NAME
    assert db.list() == []


def test_lookup_by_name_slash_and_prefix(db: GraphDB) -> None:
    a = mk(db, "alpha")
    assert db.get("alpha") == a
    assert db.get("/alpha") == a
    assert db.get(a.id[:5]) == a
    with pytest.raises(NotFound) as ei:
        db.get("nosuch")
    assert ei.value.reason == CONTAINER_NOT_FOUND
    assert ei.value.message == "No such container: nosuch"


def test_ambiguous_prefix(db: GraphDB) -> None:
    a = db.create_container(ContainerRecord(image_id=IMG, id="abc" + "0" * 61))
    db.create_container(ContainerRecord(image_id=IMG, id="abd" + "0" * 61))
    assert db.get("abc") == a
    with pytest.raises(InvalidArgument):
        db.get("ab")


def test_name_wins_over_prefix(db: GraphDB) -> None:
    db.create_container(ContainerRecord(image_id=IMG, id="beef" + "0" * 60))
    named = mk(db, "beef")
    assert db.get("beef") == named


def test_links_children_parents_walk(db: GraphDB) -> None:
    web, app, dbc, cache = (mk(db, n) for n in ("web", "app", "db", "cache"))
    db.link("web", "app", "backend")
    db.link("app", "db", "database")
    db.link("app", "cache", "cache")
    db.link("db", "web", "loop")  # a cycle must not hang the walk
    children = [(lk.child_id, lk.name) for lk in db.children("app")]
    assert children == [(cache.id, "cache"), (dbc.id, "database")]
    assert [lk.parent_id for lk in db.parents("app")] == [web.id]
    walked = db.walk("web")
    assert [(w.path, w.depth) for w in walked] == [
        ("/web", 0), ("/web/backend", 1), ("/web/backend/cache", 2), ("/web/backend/database", 2)
    ]
    assert [w.path for w in db.walk("web", depth=1)] == ["/web", "/web/backend"]
    assert walked[1].container_id == app.id


def test_link_alias_unique_per_parent(db: GraphDB) -> None:
    mk(db, "web")
    first = mk(db, "db1")
    mk(db, "db2")
    db.link("web", "db1", "db")
    with pytest.raises(Conflict) as ei:
        db.link("web", "db2", "db")
    assert ei.value.reason == NAME_IN_USE
    assert ei.value.metadata["container_id"] == first.id
    mk(db, "other")
    db.link("other", "db2", "db")  # same alias under another parent is fine


def test_link_errors(db: GraphDB) -> None:
    mk(db, "web")
    with pytest.raises(NotFound):
        db.link("web", "missing", "x1")
    with pytest.raises(InvalidArgument):
        db.link("web", "web", "self")
    with pytest.raises(NotFound):
        db.unlink("web", "nope")


def test_unlink(db: GraphDB) -> None:
    mk(db, "web")
    mk(db, "db")
    db.link("web", "db", "db")
    db.unlink("web", "db")
    assert db.children("web") == []


def test_rename_keeps_edges(db: GraphDB) -> None:
    web = mk(db, "web")
    mk(db, "db")
    mk(db, "taken")
    db.link("web", "db", "database")
    renamed = db.rename("web", "frontend")
    assert renamed.id == web.id and renamed.name == "frontend"
    assert [w.path for w in db.walk("frontend")] == ["/frontend", "/frontend/database"]
    with pytest.raises(Conflict) as ei:
        db.rename("frontend", "taken")
    assert ei.value.reason == NAME_IN_USE
    with pytest.raises(InvalidArgument):
        db.rename("frontend", "bad name")
    with pytest.raises(NotFound):
        db.get("web")
    assert db.rename("frontend", "/frontend").name == "frontend"


def test_delete_refused_while_linked_then_forced(db: GraphDB) -> None:
    web = mk(db, "web")
    dbc = mk(db, "db")
    db.link("web", "db", "database")
    with pytest.raises(Conflict) as ei:
        db.delete("db")
    assert "/web" in ei.value.message
    assert db.get("db") == dbc
    db.delete("db", force=True)
    assert db.children("web") == []
    with pytest.raises(NotFound):
        db.get(dbc.id)
    # deleting the parent side drops its outgoing edges without force
    mk(db, "db")
    db.link("web", "db", "database")
    db.delete(web.id)
    assert db.parents("db") == []


def test_update_config_and_image_users(db: GraphDB) -> None:
    a = mk(db, "aa", cmd=["sh"])
    other = "sha256:" + "cd" * 32
    mk(db, "bb", image=other)
    updated = db.update_config("aa", {"cmd": ["true"]}, labels={"k": "v"})
    assert updated.config == {"cmd": ["true"]} and updated.labels == {"k": "v"}
    assert db.containers_using_image(IMG) == [a.id]
    assert db.containers_using_image("sha256:" + "00" * 32) == []


def test_tags(db: GraphDB) -> None:
    assert db.set_tag("busybox:latest", IMG) is None
    assert db.set_tag("busybox:latest", "sha256:" + "cd" * 32) == IMG
    assert db.tags_for("sha256:" + "cd" * 32) == ["busybox:latest"]
    assert db.remove_tag("busybox:latest") is True
    assert db.remove_tag("busybox:latest") is False
    assert db.all_tags() == {}


def test_file_database_is_wal_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "graph.db"
    g = GraphDB(path)
    c = mk(g, "persist")
    g.close()
    g2 = GraphDB(path)
    assert g2.get("persist") == c
    assert next(iter(g2.db.query("PRAGMA journal_mode")))["journal_mode"] == "wal"
    assert graphdb.schema_version(g2.db) == graphdb.SCHEMA_VERSION


def test_threads_share_one_graphdb(tmp_path: Path) -> None:
    g = GraphDB(tmp_path / "graph.db")
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(10):
                mk(g, f"c{i}-{j}")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(g.list()) == 80


def test_failed_transaction_rolls_back(db: GraphDB) -> None:
    mk(db, "web")
    mk(db, "db")
    db.link("web", "db", "database")
    with pytest.raises(NotFound):
        db.link("web", "ghost", "g2")
    assert len(db.children("web")) == 1


# -- migrations: each applied to a database at the previous version ----------


def at_version(version: int) -> sqlite_utils.Database:
    d = sqlite_utils.Database(memory=True)
    assert graphdb.migrate(d, target=version) == version
    assert graphdb.schema_version(d) == version
    return d


def test_migration_0_initial() -> None:
    d = at_version(0)
    graphdb.migrate(d, target=1)
    assert {"containers", "edges", "schema_version"} <= set(d.table_names())
    d["containers"].insert({"id": "1" * 64, "name": "x1", "image_id": IMG, "config": "{}",
                            "created": "t", "labels": "{}"})
    with pytest.raises(Exception):  # noqa: B017 - UNIQUE(name): any IntegrityError
        d["containers"].insert({"id": "2" * 64, "name": "x1", "image_id": IMG, "config": "{}",
                                "created": "t", "labels": "{}"})


def test_migration_1_indexes_keeps_data() -> None:
    d = at_version(1)
    d["containers"].insert({"id": "1" * 64, "name": "x1", "image_id": IMG, "config": "{}",
                            "created": "t", "labels": "{}"})
    d["edges"].insert({"parent_id": "1" * 64, "child_id": "2" * 64, "name": "l"})
    graphdb.migrate(d, target=2)
    indexed = {tuple(ix.columns) for ix in d["containers"].indexes}
    assert ("image_id",) in indexed
    assert ("child_id",) in {tuple(ix.columns) for ix in d["edges"].indexes}
    assert d["containers"].count == 1 and d["edges"].count == 1


def test_migration_2_tags() -> None:
    d = at_version(2)
    d["containers"].insert({"id": "1" * 64, "name": "x1", "image_id": IMG, "config": "{}",
                            "created": "t", "labels": "{}"})
    graphdb.migrate(d, target=3)
    assert "tags" in d.table_names()
    assert d["containers"].count == 1


def test_migration_3_volumes() -> None:
    d = at_version(3)
    d["tags"].insert({"ref": "a:b", "image_id": IMG})
    graphdb.migrate(d, target=4)
    d["volumes"].insert({"name": "v1", "driver": "local", "created": "t", "labels": "{}", "options": "{}",
                         "anonymous": 0})
    with pytest.raises(Exception):  # noqa: B017 - PRIMARY KEY(name): any IntegrityError
        d["volumes"].insert({"name": "v1", "driver": "local", "created": "t", "labels": "{}",
                             "options": "{}", "anonymous": 1})
    assert d["tags"].count == 1


def test_graphdb_opens_old_database(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    d = sqlite_utils.Database(path)
    graphdb.migrate(d, target=1)
    d["containers"].insert({"id": "1" * 64, "name": "old", "image_id": IMG, "config": "{}",
                            "created": "2020-01-01T00:00:00Z", "labels": "{}"})
    d.close()
    g = GraphDB(path)
    assert g.get("old").id == "1" * 64
    assert graphdb.schema_version(g.db) == graphdb.SCHEMA_VERSION


def test_every_migration_has_a_test() -> None:
    tested = {name for name in globals() if name.startswith("test_migration_")}
    assert len(tested) == len(graphdb.MIGRATIONS)


def test_concurrent_deletes_each_get_their_own_outcome(tmp_path: Path) -> None:
    """Removals at once share commits; each one still succeeds or fails alone, and what was
    removed is gone from the file (durable: another connection sees it)."""
    path = tmp_path / "graph.db"
    db = GraphDB(path)
    made = [mk(db, f"c{i}") for i in range(40)]
    mk(db, "linked")
    db.link("c0", "linked", "alias")
    refs = [c.id for c in made[1:]] + ["nosuch", "linked", made[5].id]
    outcomes: dict[int, object] = {}

    def remove(i: int, ref: str) -> None:
        try:
            outcomes[i] = db.delete(ref).id
        except (NotFound, Conflict) as e:
            outcomes[i] = type(e)

    threads = [threading.Thread(target=remove, args=(i, r)) for i, r in enumerate(refs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(outcomes) == len(refs)
    for i, c in enumerate(made[1:]):
        assert outcomes[i] == c.id or (c is made[5] and outcomes[i] is NotFound)
    assert outcomes[len(made) - 1] is NotFound  # nosuch
    assert outcomes[len(made)] is Conflict  # linked from c0
    # made[5] twice: exactly one removal won
    assert sorted(str(outcomes[i]) for i in (4, len(refs) - 1)).count(made[5].id) == 1
    other = sqlite_utils.Database(path)
    assert sorted(r["name"] for r in other.query("SELECT name FROM containers")) == ["c0", "linked"]
    other.close()
    db.close()


def test_delete_many_one_transaction_each_its_own_outcome(db: GraphDB) -> None:
    a, b, c = mk(db, "ca"), mk(db, "cb"), mk(db, "cc")
    web = mk(db, "web")
    db.link("web", "ca", "alias")
    # without force: the linked-to one is refused, the others go; unknown and repeated ones fail alone
    done, failed = db.delete_many([a.id, b.id, "nosuch", "cc", c.id])
    assert sorted(r.id for r in done) == sorted([b.id, c.id])
    assert set(failed) == {a.id, "nosuch", c.id}
    assert isinstance(failed[a.id], Conflict) and "/web" in failed[a.id].message
    assert isinstance(failed["nosuch"], NotFound) and failed["nosuch"].reason == CONTAINER_NOT_FOUND
    assert db.get("ca") == a and db.children("web")[0].child_id == a.id
    # with force: the links go with it; full ids, names and prefixes all resolve
    done, failed = db.delete_many([a.id, "web", "nosuch", "/web"], force=True)
    assert sorted(r.id for r in done) == sorted([a.id, web.id])
    assert set(failed) == {"nosuch", "/web"}  # the second reference to web finds it gone
    assert db.list() == []
    assert list(db.db.query("SELECT * FROM edges")) == []


def test_get_many_in_order(db: GraphDB) -> None:
    a, b = mk(db, "ca"), mk(db, "cb")
    got = db.get_many([b.id, "ca", "nosuch", a.id[:10]])
    assert got[:2] == [b, a] and got[3] == a
    assert isinstance(got[2], NotFound)
