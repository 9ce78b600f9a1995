"""The gateway's records of containers it has just created (skiff.apiserver.fresh)."""

from __future__ import annotations

import threading

from skiff.apiserver.fresh import FreshRecords
from skiff.graph.v1 import graph_pb2
from skiff.types.v1 import types_pb2

from .test_apiserver_fakes import FakeGraph


def _create(fresh: FreshRecords, name: str = "") -> graph_pb2.Container:
    config = types_pb2.ContainerConfig(image="busybox")
    config.cmd.values.append("true")
    resp: graph_pb2.CreateContainerResponse = fresh.create_container(
        graph_pb2.CreateContainerRequest(name=name, config=config))
    return resp.container


def test_a_created_record_is_given_by_id_without_asking() -> None:
    graph = FakeGraph()
    fresh = FreshRecords(graph)
    made = _create(fresh, "web")
    graph.calls.clear()
    got = fresh.get_container(made.id)
    assert got == made and graph.calls == []
    got.host_config.memory_bytes = 1  # a copy: the caller may change it
    assert fresh.get_container(made.id).host_config.memory_bytes == 0
    assert fresh.get_container("web").id == made.id and fresh.get_container("/web").id == made.id
    assert graph.calls == []
    assert fresh.get_container(made.id[:12]).id == made.id and graph.calls == ["get_container"]  # a prefix: asked


def test_a_name_of_64_hex_digits_is_asked_for() -> None:
    """graphsvc resolves a full id before a name: such a ref may be another container's id."""
    graph = FakeGraph()
    fresh = FreshRecords(graph)
    made = _create(fresh, "b" * 64)
    graph.calls.clear()
    assert fresh.get_container("b" * 64).id == made.id and graph.calls == ["get_container"]


def test_any_write_forgets_the_records() -> None:
    graph = FakeGraph()
    fresh = FreshRecords(graph)
    made = _create(fresh, "web")
    fresh.set_restart_state(made.id, graph_pb2.RestartState(restart_count=2))
    assert fresh.kept() == 0
    assert fresh.get_container(made.id).restart_state.restart_count == 2
    other = _create(fresh)
    fresh.delete_container(made.id)  # a removal (links of others may go with it)
    assert not fresh.has(other.id)


def test_reads_keep_the_records() -> None:
    graph = FakeGraph()
    fresh = FreshRecords(graph)
    made = _create(fresh)
    fresh.list_containers()
    fresh.get_rootfs(made.id)
    assert fresh.has(made.id)


def test_a_create_beside_a_write_keeps_nothing() -> None:
    """The write may be about the new container (by its name) and be stored after it."""
    graph = FakeGraph()
    fresh = FreshRecords(graph)
    inside, release = threading.Event(), threading.Event()
    real = graph.update_host_config

    def slow_update(container_id: str, host_config: types_pb2.HostConfig) -> None:
        inside.set()
        assert release.wait(10)
        real(container_id, host_config)

    graph.update_host_config = slow_update  # type: ignore[method-assign]
    target = _create(fresh)
    writer = threading.Thread(target=fresh.update_host_config, args=(target.id, types_pb2.HostConfig()))
    writer.start()
    try:
        assert inside.wait(10)
        made = _create(fresh)  # while the write is in progress
    finally:
        release.set()
        writer.join(10)
    assert not fresh.has(made.id) and fresh.kept() == 0


def test_records_expire() -> None:
    now = [100.0]
    fresh = FreshRecords(FakeGraph(), ttl=30.0, clock=lambda: now[0])
    made = _create(fresh)
    assert fresh.has(made.id)
    now[0] += 31
    assert not fresh.has(made.id)


def test_at_most_keep_records() -> None:
    fresh = FreshRecords(FakeGraph(), keep=2)
    made = [_create(fresh) for _ in range(3)]
    assert [fresh.has(c.id) for c in made] == [False, True, True]


def test_unstarted_once_and_the_rootfs_with_the_record() -> None:
    graph = FakeGraph()
    fresh = FreshRecords(graph)
    made = _create(fresh)
    assert fresh.rootfs(made.id) == graph.get_rootfs(made.id).rootfs
    assert fresh.take_unstarted(made.id) and not fresh.take_unstarted(made.id)
    assert not fresh.take_unstarted("f" * 64)  # not created here: it may have a task
    fresh.set_restart_state(made.id, graph_pb2.RestartState())  # a write: the record and rootfs go
    assert fresh.rootfs(made.id) is None


def test_a_create_beside_a_write_is_still_unstarted() -> None:
    """Whatever else is written meanwhile, a container just created has no task."""
    graph = FakeGraph()
    fresh = FreshRecords(graph)
    real = graph.create_container

    def create_with_a_write(req: graph_pb2.CreateContainerRequest) -> graph_pb2.CreateContainerResponse:
        fresh.set_restart_state(other.id, graph_pb2.RestartState())
        return real(req)

    other = _create(fresh)
    graph.create_container = create_with_a_write  # type: ignore[method-assign]
    made = _create(fresh)
    assert not fresh.has(made.id) and fresh.take_unstarted(made.id)
