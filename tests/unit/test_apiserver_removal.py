"""RemoveContainers (`rm C1 C2 ...` in one call) over the fake backends."""

from __future__ import annotations

import signal
import time

import grpc

from skiff.api.v1 import api_pb2
from skiff.common import errors
from skiff.types.v1 import types_pb2

from .test_apiserver import Env, env, failure  # noqa: F401  (env: the fixture)


def _rm(env: Env, *refs: str, force: bool = False) -> list[api_pb2.RemoveContainerResult]:  # noqa: F811
    req = api_pb2.RemoveContainersRequest(containers=list(refs), force=force)
    return list(env.api.RemoveContainers(req, timeout=10).results)


def test_each_reference_gets_its_own_result_in_order(env: Env) -> None:  # noqa: F811
    a, b = env.create("true"), env.create("true")
    exited = env.run("exit", "3")
    running = env.run("sleep")
    b_name = env.graph.containers[b].name
    # a WaitContainer(REMOVED) in progress gets the exit status of the removed container
    asked = env.exec.calls.count("get_task")
    waiter = env.api.WaitContainer.future(api_pb2.WaitContainerRequest(
        container=exited, condition=api_pb2.WAIT_CONDITION_REMOVED), timeout=10)
    deadline = time.monotonic() + 10  # in progress: it has read the record and asked for the task
    while env.exec.calls.count("get_task") == asked and time.monotonic() < deadline:
        time.sleep(0.01)
    results = _rm(env, a, "nosuch", b_name, running, exited[:12])
    assert waiter.result().exit_code == 3
    assert [r.container for r in results] == [a, "nosuch", b_name, running, exited[:12]]
    assert [r.code for r in results] == [0, grpc.StatusCode.NOT_FOUND.value[0], 0,
                                         grpc.StatusCode.FAILED_PRECONDITION.value[0], 0]
    assert results[1].message == "No such container: nosuch"
    assert results[1].reason == errors.CONTAINER_NOT_FOUND
    assert results[3].message == (f"You cannot remove a running container {running}. Stop the container "
                                  "before attempting removal or force remove")
    assert results[3].reason == errors.CONTAINER_RUNNING
    assert [r.id for r in results] == [a, "", b, running, exited]
    # the running one is untouched; the others are gone from every backend
    assert env.exec.running(running) and running in env.graph.containers
    assert set(env.graph.containers) == {running}
    assert exited not in env.exec.tasks


def test_force_kills_running_ones(env: Env) -> None:  # noqa: F811
    running = [env.run("sleep") for _ in range(3)]
    created = env.create("true")
    results = _rm(env, *running, created, force=True)
    assert [r.code for r in results] == [0, 0, 0, 0]
    for cid in running:
        assert env.exec.signals[cid] == [signal.SIGKILL]
        assert cid not in env.net.endpoints
    assert env.graph.containers == {} and env.exec.tasks == {}


def test_one_call_per_backend_for_the_batch(env: Env) -> None:  # noqa: F811
    ids = [env.create("true") for _ in range(20)]
    env.graph.calls.clear()
    env.exec.calls.clear()
    env.net.calls.clear()
    assert all(r.code == 0 for r in _rm(env, *ids))
    assert env.graph.calls == ["get_containers", "delete_containers"]
    assert env.exec.calls == ["get_tasks", "delete_tasks"]
    assert env.net.calls == ["delete_endpoints"]


def test_the_same_container_twice(env: Env) -> None:  # noqa: F811
    cid = env.create("true")
    name = env.graph.containers[cid].name
    first, second = _rm(env, cid, name)
    assert first.code == 0
    assert (second.code, second.message) == (grpc.StatusCode.NOT_FOUND.value[0], f"No such container: {name}")


def test_a_failed_step_keeps_those_records_for_a_retry(env: Env) -> None:  # noqa: F811
    ids = [env.run("exit", "0") for _ in range(3)]
    env.exec.fail_delete = errors.Unavailable("execsvc is down")
    results = _rm(env, *ids)
    assert {r.code for r in results} == {grpc.StatusCode.UNAVAILABLE.value[0]}
    assert all(cid in env.graph.containers for cid in ids)  # nothing half removed
    env.exec.fail_delete = None
    assert all(r.code == 0 for r in _rm(env, *ids))
    assert env.graph.containers == {}


def test_links_to_a_removed_container_go_with_it(env: Env) -> None:  # noqa: F811
    db, other = env.create("true"), env.create("true")
    web = env.create("true")
    env.graph.containers[web].links.append(types_pb2.Link(parent_id=web, child_id=db, name="database"))
    assert [r.code for r in _rm(env, db, other)] == [0, 0]
    assert list(env.inspect(web).links) == []


def test_bad_batches(env: Env) -> None:  # noqa: F811
    code, _, message = failure(env.api.RemoveContainers, api_pb2.RemoveContainersRequest(), timeout=5)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "no containers" in message
    too_many = api_pb2.RemoveContainersRequest(containers=["x"] * 10001)
    code, _, message = failure(env.api.RemoveContainers, too_many, timeout=5)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "10000" in message


def test_a_backend_down_before_any_deletion_fails_each_and_removes_none(env: Env) -> None:  # noqa: F811
    ids = [env.create("true") for _ in range(2)]

    def down(task_ids: list[str]) -> dict:
        raise errors.Unavailable("execsvc is down")

    env.exec.get_tasks = down  # type: ignore[method-assign]
    results = _rm(env, *ids, "nosuch")
    assert [r.code for r in results] == [grpc.StatusCode.UNAVAILABLE.value[0]] * 2 + [
        grpc.StatusCode.NOT_FOUND.value[0]]
    assert results[0].message == "execsvc is down"
    assert set(ids) <= set(env.graph.containers)
