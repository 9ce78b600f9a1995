"""netsvc domain code with a fake driver: records, idempotency, errors, reconciliation."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import grpc
import pytest

from skiff.common import errors
from skiff.common.server import Service
from skiff.netsvc import store as store_mod
from skiff.netsvc.bridge import Release
from skiff.netsvc.client import NetworkClient
from skiff.netsvc.drivers import HostDriver
from skiff.netsvc.fake import FakeDriver
from skiff.netsvc.manager import ENDPOINT_NOT_FOUND, UNKNOWN_NETWORK_MODE, EndpointManager
from skiff.netsvc.model import Endpoint
from skiff.netsvc.server import build_service
from skiff.netsvc.store import EndpointStore


@pytest.fixture
def driver() -> FakeDriver:
    return FakeDriver("none")


def make(tmp_path: Path, driver: FakeDriver) -> EndpointManager:
    return EndpointManager([driver, HostDriver()], EndpointStore(tmp_path / "network" / "endpoints.json"))


def test_create_is_idempotent_and_persisted(tmp_path: Path, driver: FakeDriver) -> None:
    m = make(tmp_path, driver)
    first = m.create_endpoint("c1", "none")
    assert m.create_endpoint("c1", "none") == first
    assert driver.calls == [("create", "c1")]
    assert make(tmp_path, driver).get_endpoint("c1") == first  # a new manager reads the record


def test_create_with_another_mode_is_refused(tmp_path: Path, driver: FakeDriver) -> None:
    m = make(tmp_path, driver)
    m.create_endpoint("c1", "none")
    with pytest.raises(errors.AlreadyExists):
        m.create_endpoint("c1", "host")


def test_unknown_mode_names_supported_ones(tmp_path: Path, driver: FakeDriver) -> None:
    with pytest.raises(errors.InvalidArgument) as exc:
        make(tmp_path, driver).create_endpoint("c1", "bridge")
    assert exc.value.reason == UNKNOWN_NETWORK_MODE
    assert exc.value.metadata["supported"] == "host, none"


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".hidden", "x" * 129])
def test_bad_container_id(tmp_path: Path, driver: FakeDriver, bad: str) -> None:
    with pytest.raises(errors.InvalidArgument):
        make(tmp_path, driver).create_endpoint(bad, "none")


def test_get_missing_and_delete_idempotent(tmp_path: Path, driver: FakeDriver) -> None:
    m = make(tmp_path, driver)
    with pytest.raises(errors.NotFound) as exc:
        m.get_endpoint("nope")
    assert exc.value.reason == ENDPOINT_NOT_FOUND
    m.create_endpoint("c1", "none")
    m.delete_endpoint("c1")
    m.delete_endpoint("c1")
    assert m.list_endpoints() == []
    assert driver.live == set()
    assert make(tmp_path, driver).list_endpoints() == []


def test_reconcile_drops_dead_records_and_removes_orphans(tmp_path: Path, driver: FakeDriver) -> None:
    m = make(tmp_path, driver)
    m.create_endpoint("alive", "none")
    m.create_endpoint("dead", "none")
    m.create_endpoint("h", "host")
    driver.live.discard("dead")  # its namespace vanished (e.g. a reboot)
    driver.live.add("orphan")  # a namespace nobody recorded
    m2 = make(tmp_path, driver)
    m2.reconcile()
    assert [e.container_id for e in m2.list_endpoints()] == ["alive", "h"]
    assert driver.live == {"alive"}
    assert ("remove_orphan", "orphan") in driver.calls
    assert [e.container_id for e in make(tmp_path, driver).list_endpoints()] == ["alive", "h"]


def test_store_roundtrip_leaves_no_temp_files(tmp_path: Path) -> None:
    store = EndpointStore(tmp_path / "e.json")
    eps = {"a": Endpoint("a", "none", "/x/a"), "b": Endpoint("b", "host")}
    store.save(eps)
    assert store.load() == eps
    assert [p.name for p in tmp_path.iterdir()] == ["e.json"]


def test_servicer_and_client_map_errors(tmp_path: Path, driver: FakeDriver) -> None:
    """Over a real unix socket: the client raises the same classes the manager does."""
    sock = tmp_path / "run" / "netsvc.sock"
    service: Service = build_service([f"unix://{sock}"], make(tmp_path, driver))
    service.start()
    try:
        with grpc.insecure_channel(f"unix://{sock}") as ch:
            client = NetworkClient(ch, timeout=5)
            e = client.create_endpoint("c1", "none")
            assert e == Endpoint("c1", "none", "/fake/netns/c1")
            assert client.create_endpoint("c1", "none") == e
            assert client.get_endpoint("c1") == e
            assert client.list_endpoints() == [e]
            with pytest.raises(errors.NotFound) as nf:
                client.get_endpoint("c2")
            assert nf.value.reason == ENDPOINT_NOT_FOUND
            with pytest.raises(errors.InvalidArgument) as inv:
                client.create_endpoint("c2", "overlay")
            assert inv.value.reason == UNKNOWN_NETWORK_MODE and "none" in inv.value.message
            client.delete_endpoint("c1")
            client.delete_endpoint("c1")
            assert client.list_endpoints() == []
    finally:
        service.stop(grace=0)
    assert not sock.exists()


class SlowDeleteDriver(FakeDriver):
    """A driver that deletes in two halves, as the bridge driver: its kernel half waits for ``release``."""

    def __init__(self) -> None:
        super().__init__("bridge")
        self.release = threading.Event()
        self.completed: list[str] = []

    def create_endpoint(self, container_id: str, opts: object = None) -> Endpoint:  # type: ignore[override]
        self.live.add(container_id)
        return Endpoint(container_id, self.mode, f"/fake/{container_id}", veth=f"veth{container_id}")

    def begin_delete(self, endpoint: Endpoint) -> Release:
        self.live.discard(endpoint.container_id)
        return Release(endpoint)

    def finish_kernel(self, item: Release) -> None:
        with item.lock:
            assert self.release.wait(30)
            item.kernel_done = True

    def complete(self, item: Release) -> None:
        if not item.finished:
            self.finish_kernel(item)
            self.completed.append(item.endpoint.container_id)
            item.finished = True


def test_delete_returns_before_the_kernel_half_and_close_waits_for_it(tmp_path: Path) -> None:
    d = SlowDeleteDriver()
    m = EndpointManager([d], EndpointStore(tmp_path / "endpoints.json"))
    m.create_endpoint("c1", "bridge")
    m.create_endpoint("c2", "bridge")
    m.delete_endpoint("c1")  # returns although the kernel half is blocked
    assert [e.container_id for e in m.list_endpoints()] == ["c2"] and d.completed == []
    assert EndpointStore(tmp_path / "endpoints.json").load_cleanup() == ["vethc1"]  # journaled
    m.delete_endpoint("c2")
    assert EndpointStore(tmp_path / "endpoints.json").load_cleanup() == ["vethc1", "vethc2"]
    threading.Timer(0.2, d.release.set).start()
    m.close()  # waits for both
    assert sorted(d.completed) == ["c1", "c2"]
    assert EndpointStore(tmp_path / "endpoints.json").load_cleanup() == []


def test_the_cleanup_thread_completes_deletions_on_its_own(tmp_path: Path) -> None:
    d = SlowDeleteDriver()
    d.release.set()
    m = EndpointManager([d], EndpointStore(tmp_path / "endpoints.json"))
    for i in range(5):
        m.create_endpoint(f"c{i}", "bridge")
        m.delete_endpoint(f"c{i}")
    deadline = time.monotonic() + 30
    while len(d.completed) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(d.completed) == [f"c{i}" for i in range(5)]
    m.close()


def test_a_torn_record_file_is_read_as_empty(tmp_path: Path) -> None:
    """Written without fsync: after a power cut (which took every namespace) it may be torn."""
    path = tmp_path / "endpoints.json"
    path.write_text('{"version": 1, "endpoi')
    assert EndpointStore(path).load() == {} and EndpointStore(path).load_cleanup() == []


def test_store_appends_changes_and_replays_them_over_the_snapshot(tmp_path: Path) -> None:
    """A change is one appended line; a new reader (netsvc after a crash) sees every change."""
    path = tmp_path / "endpoints.json"
    store = EndpointStore(path)
    store.load()
    eps = {"a": Endpoint("a", "none", "/x/a")}
    store.save(eps)
    snapshot = path.read_text() if path.exists() else ""
    eps["b"] = Endpoint("b", "bridge", "/x/b", ip_address="172.18.0.2", veth="vethb")
    store.save(eps)
    del eps["a"]
    store.save(eps, cleanup=["vetha"])
    assert (path.read_text() if path.exists() else "") == snapshot  # not rewritten
    assert len((tmp_path / "endpoints.log").read_text().splitlines()) == 4  # put a, put b, del a, cleanup
    again = EndpointStore(path)
    assert again.load() == eps and again.load_cleanup() == ["vetha"]
    store.close(eps)  # a clean shutdown: one file again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["endpoints.json"]
    assert EndpointStore(path).load() == eps and EndpointStore(path).load_cleanup() == []


def test_store_compacts_and_a_crash_before_the_log_is_emptied_reads_the_same(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod, "COMPACT_EVERY", 5)
    path = tmp_path / "endpoints.json"
    store = EndpointStore(path)
    store.load()
    eps: dict[str, Endpoint] = {}
    for i in range(12):  # churn: a create and a delete each
        eps[f"c{i}"] = Endpoint(f"c{i}", "none", f"/x/c{i}")
        store.save(eps)
        if i % 2:
            del eps[f"c{i - 1}"]
            store.save(eps)
    assert len((tmp_path / "endpoints.log").read_text().splitlines()) <= 5
    assert EndpointStore(path).load() == eps
    log_before = (tmp_path / "endpoints.log").read_bytes()
    # The snapshot renamed into place, then a crash before the log is truncated: the old lines replay.
    store_mod.write_json_atomic(path, {"version": 1, "endpoints": [dataclasses.asdict(e) for e in eps.values()]})
    (tmp_path / "endpoints.log").write_bytes(log_before)
    assert EndpointStore(path).load() == eps


def test_store_stops_at_a_torn_log_line(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.json"
    store = EndpointStore(path)
    store.load()
    store.save({"a": Endpoint("a", "none", "/x/a")})
    with open(tmp_path / "endpoints.log", "a") as f:
        f.write('{"put": {"container_id": "b", "netw')
    assert list(EndpointStore(path).load()) == ["a"]
