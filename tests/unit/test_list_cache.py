"""ListContainers without per-container work when nothing changed: graphsvc's generation
(ListContainersRequest.if_changed_since) and the gateway's kept answer. Every kind of change
must show in the next list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from skiff.apiserver.containers import Containers
from skiff.graph.v1 import graph_pb2
from skiff.graphsvc.graph import Graph
from skiff.graphsvc.servicer import ContainerGraphServicer
from skiff.types.v1 import types_pb2

from .test_apiserver_fakes import FakeExec, FakeGraph, FakeNet

Status = types_pb2.ContainerStatus


def cfg() -> types_pb2.ContainerConfig:
    c = types_pb2.ContainerConfig(image="busybox")
    c.cmd.values[:] = ["true"]
    return c


def _list(servicer: ContainerGraphServicer, since: str = "") -> graph_pb2.ListContainersResponse:
    return servicer.ListContainers(graph_pb2.ListContainersRequest(if_changed_since=since), None)  # type: ignore[arg-type]


def test_graphsvc_answers_unchanged_until_a_write(graph: Graph) -> None:
    servicer = ContainerGraphServicer(graph)
    a, _ = graph.create("aa", cfg(), types_pb2.HostConfig())
    first = _list(servicer)
    assert [c.name for c in first.containers] == ["aa"] and first.generation and not first.unchanged
    again = _list(servicer, first.generation)
    assert again.unchanged and again.generation == first.generation and not again.containers

    def changed(since: str) -> graph_pb2.ListContainersResponse:
        resp = _list(servicer, since)
        assert not resp.unchanged and resp.generation != since
        return resp

    gen = first.generation
    steps: list[tuple[Any, Any]] = [
        (lambda: graph.create("bb", cfg(), types_pb2.HostConfig(links=["aa:db"])),
         lambda r: sorted(c.name for c in r.containers) == ["aa", "bb"]),
        (lambda: graph.rename("bb", "cc"), lambda r: sorted(c.name for c in r.containers) == ["aa", "cc"]),
        (lambda: graph.delete_link("cc", "db"), lambda r: all(not c.links for c in r.containers)),
        (lambda: graph.set_restart_state(a.id, {"restart_count": 3}),
         lambda r: [c.restart_state.restart_count for c in r.containers if c.id == a.id] == [3]),
        (lambda: graph.update_host_config(a.id, types_pb2.HostConfig(memory_bytes=1 << 24)),
         lambda r: [c.host_config.memory_bytes for c in r.containers if c.id == a.id] == [1 << 24]),
        (lambda: graph.delete(a.id), lambda r: [c.name for c in r.containers] == ["cc"]),
    ]
    for write, check in steps:
        write()
        resp = changed(gen)
        assert check(resp), resp
        gen = resp.generation
        assert _list(servicer, gen).unchanged


def test_graphsvc_generation_differs_between_processes(graph: Graph, tmp_path: Path) -> None:
    """A restarted graphsvc (a new Graph over the same database) never says unchanged to a
    generation of the one before."""
    graph.create("aa", cfg(), types_pb2.HostConfig())
    gen = _list(ContainerGraphServicer(graph)).generation
    again = Graph(graph.db, graph.images, graph.layers, "vfs", tmp_path)
    assert not _list(ContainerGraphServicer(again), gen).unchanged


def test_a_filtered_list_is_not_cut_short(graph: Graph) -> None:
    servicer = ContainerGraphServicer(graph)
    graph.create("aa", cfg(), types_pb2.HostConfig())
    graph.create("bb", cfg(), types_pb2.HostConfig())
    all_ = _list(servicer)
    only = servicer.ListContainers(graph_pb2.ListContainersRequest(  # type: ignore[arg-type]
        filters=[types_pb2.Filter(key="name", value="^aa$")]), None)
    assert [c.name for c in only.containers] == ["aa"]
    assert len(_list(servicer).containers) == 2 and all_.generation == only.generation


# --- the gateway ------------------------------------------------------------------------------


@pytest.fixture
def gateway() -> tuple[Containers, FakeGraph, FakeExec, FakeNet]:
    g, e, n = FakeGraph(), FakeExec(), FakeNet()
    c = Containers(g, e, n, poll_interval=0.02, watch_interval=0.2)
    yield c, g, e, n
    c.close()


def _create(graph: FakeGraph, name: str, *cmd: str) -> str:
    config = types_pb2.ContainerConfig(image="busybox")
    config.cmd.values[:] = list(cmd) or ["true"]
    return graph.create_container(graph_pb2.CreateContainerRequest(
        name=name, config=config, host_config=types_pb2.HostConfig(network_mode="none"))).container.id


def test_gateway_answer_follows_records_tasks_and_endpoints(gateway: tuple[Containers, FakeGraph, FakeExec, FakeNet]
                                                            ) -> None:
    c, graph, _, net = gateway
    a = _create(graph, "a", "sleep", "60")
    first = c.list_response(True, [])
    assert [(x.name, x.state.status) for x in first.containers] == [("a", Status.CONTAINER_STATUS_CREATED)]
    assert c.list_response(True, []) is first  # nothing changed: the same answer, no merging again
    assert list(c.list_response(False, []).containers) == []

    c.start(a)  # a task (and an endpoint) now
    running = c.list_response(False, [])
    assert [(x.name, x.state.status) for x in running.containers] == [("a", Status.CONTAINER_STATUS_RUNNING)]
    assert running.containers[0].network_settings.sandbox_key  # the endpoint's
    assert c.list_response(True, []).containers[0].state.status == Status.CONTAINER_STATUS_RUNNING

    b = _create(graph, "b")  # a record
    assert [x.name for x in c.list_response(True, []).containers] == ["b", "a"]
    graph.get_container(b).name = "b2"  # a change inside a record
    assert [x.name for x in c.list_response(True, []).containers] == ["b2", "a"]

    net.endpoints[a].ip_address = "10.9.9.9"  # an endpoint
    assert c.list_response(False, []).containers[0].network_settings.ip_address == "10.9.9.9"

    c.remove(a, force=True)
    assert [x.name for x in c.list_response(True, []).containers] == ["b2"]
    assert list(c.list_response(False, []).containers) == []


def test_gateway_filters_and_sizes_are_not_kept(gateway: tuple[Containers, FakeGraph, FakeExec, FakeNet]) -> None:
    c, graph, _, _ = gateway
    _create(graph, "a")
    _create(graph, "b")
    named = c.list_response(True, [types_pb2.Filter(key="name", value="^a$")])
    assert [x.name for x in named.containers] == ["a"]
    sized = c.list_response(True, [], size=True)
    assert [x.size_rw for x in sized.containers] == [10, 10]
    assert [x.size_rw for x in c.list_response(True, []).containers] == [0, 0]  # sizes not in the kept answer
