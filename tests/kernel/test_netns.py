"""netsvc against the real kernel: persistent namespaces, reconciliation, the gRPC server.

Root only. Each test uses its own data and exec roots in tmp, and the fixture
checks that no mount under them survives the test.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from skiff.netsvc import netns
from skiff.netsvc.client import NetworkClient
from skiff.netsvc.server import SERVICE_NAME, build_manager, build_service

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and mounts need root"),
]


def mounts_under(root: Path) -> list[str]:
    prefix = str(root) + "/"
    return [mp for mp, _ in netns.mount_points() if mp.startswith(prefix)]


@pytest.fixture
def roots(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    data, run = tmp_path / "data", tmp_path / "run"
    yield data, run
    # netsvc leaves <exec-root>/netns mounted on purpose (like /run/netns); tests must not.
    for mp in reversed(mounts_under(tmp_path)):
        netns.umount(mp)
    assert mounts_under(tmp_path) == []


def links_in(path: str) -> list[str]:
    out = subprocess.run(["nsenter", f"--net={path}", "ip", "-o", "link"],
                         capture_output=True, text=True, check=True).stdout
    return out.splitlines()


def test_none_endpoint_has_only_lo_up_and_delete_cleans(roots: tuple[Path, Path]) -> None:
    data, run = roots
    m = build_manager(data, run)
    e = m.create_endpoint("c1", "none")
    assert e.netns_path == str(run / "netns" / "c1")
    links = links_in(e.netns_path)
    assert len(links) == 1 and ": lo:" in links[0] and "UP" in links[0].split("<")[1].split(">")[0]
    assert os.stat(e.netns_path).st_ino != os.stat("/proc/self/ns/net").st_ino
    m.delete_endpoint("c1")
    m.delete_endpoint("c1")
    assert e.netns_path not in [mp for mp, _ in netns.mount_points()]
    assert not Path(e.netns_path).exists()


def test_host_endpoint_has_no_path(roots: tuple[Path, Path]) -> None:
    data, run = roots
    e = build_manager(data, run).create_endpoint("h1", "host")
    assert e.netns_path == ""


def test_reconcile_removes_orphans_and_drops_lost_records(roots: tuple[Path, Path]) -> None:
    data, run = roots
    m = build_manager(data, run)
    kept = m.create_endpoint("kept", "none")
    lost = m.create_endpoint("lost", "none")
    netns.umount(lost.netns_path)  # as if the namespace vanished behind our back
    orphan = run / "netns" / "orphan"
    netns.create(orphan)  # a namespace with no record
    m2 = build_manager(data, run)  # start-up: reconcile
    assert [e.container_id for e in m2.list_endpoints()] == ["kept"]
    assert netns.mounted_under(run / "netns") == {"kept"}
    assert not orphan.exists() and not Path(lost.netns_path).exists()
    assert links_in(kept.netns_path)
    m2.delete_endpoint("kept")


def test_server_over_unix_socket(roots: tuple[Path, Path]) -> None:
    data, run = roots
    sock = run / "netsvc.sock"
    service = build_service([f"unix://{sock}"], build_manager(data, run))
    service.start()
    try:
        with grpc.insecure_channel(f"unix://{sock}") as ch:
            health = health_pb2_grpc.HealthStub(ch)
            for name in ("", SERVICE_NAME):
                resp = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
                assert resp.status == health_pb2.HealthCheckResponse.SERVING
            refl = reflection_pb2_grpc.ServerReflectionStub(ch)
            answers = list(refl.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
            names = {s.name for s in answers[0].list_services_response.service}
            assert SERVICE_NAME in names
            client = NetworkClient(ch, timeout=5)
            e = client.create_endpoint("c1", "none")
            assert links_in(e.netns_path)
            assert client.list_endpoints() == [e]
            client.delete_endpoint("c1")
            assert not Path(e.netns_path).exists()
    finally:
        service.stop(grace=0)


def test_close_releases_the_netns_directory_mount(tmp_path: Path) -> None:
    from skiff.netsvc.drivers import NoneDriver

    driver = NoneDriver(tmp_path / "netns")
    assert not netns.is_mounted(tmp_path / "netns")  # nothing is mounted until it is needed
    endpoint = driver.create_endpoint("c1")
    driver.close()  # a live namespace keeps the directory mounted
    assert netns.is_mounted(tmp_path / "netns")
    driver.delete_endpoint(endpoint)
    driver.close()
    assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()
