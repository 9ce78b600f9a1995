"""netsvc domain code with a fake driver: records, idempotency, errors, reconciliation."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from skiff.common import errors
from skiff.common.server import Service
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
