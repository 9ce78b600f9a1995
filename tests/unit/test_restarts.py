"""The restart manager over fake backends: Docker's policy rules, back-off, and no double restart."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator

import pytest

from skiff.api.v1 import api_pb2
from skiff.apiserver.containers import Containers
from skiff.apiserver.restarts import MAX_BACKOFF_MS, decide
from skiff.common import errors
from skiff.graph.v1 import graph_pb2
from skiff.types.v1 import types_pb2

from .test_apiserver_fakes import FakeExec, FakeGraph, FakeNet

Status = types_pb2.ContainerStatus


def _until(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.02)


class Env:
    def __init__(self, daemon_id: str = "d1") -> None:
        self.graph, self.exec, self.net = FakeGraph(), FakeExec(), FakeNet()
        self.c = Containers(self.graph, self.exec, self.net, watch_interval=0.5, daemon_id=daemon_id)

    def create(self, *argv: str, policy: str = "", retries: int = 0) -> str:
        config = types_pb2.ContainerConfig(image="busybox", cmd=types_pb2.StringList(values=argv))
        host = types_pb2.HostConfig(restart_policy=types_pb2.RestartPolicy(name=policy, maximum_retry_count=retries))
        return self.c.create(api_pb2.CreateContainerRequest(config=config, host_config=host)).id

    def starts(self) -> int:
        return self.exec.calls.count("start_task")

    def state(self, cid: str) -> graph_pb2.RestartState:
        return self.graph.containers[cid].restart_state


@pytest.fixture
def env() -> Iterator[Env]:
    e = Env()
    yield e
    e.c.close()


def _record(policy: str, retries: int = 0, **state: object) -> graph_pb2.Container:
    return graph_pb2.Container(
        host_config=types_pb2.HostConfig(restart_policy=types_pb2.RestartPolicy(name=policy,
                                                                                 maximum_retry_count=retries)),
        restart_state=graph_pb2.RestartState(**state))  # type: ignore[arg-type]


def test_decide_follows_dockers_rules() -> None:
    assert decide(_record("no"), 1, 0, "d") == (False, 100)
    assert decide(_record("always"), 0, 0, "d")[0]
    assert decide(_record("unless-stopped"), 0, 0, "d")[0]
    assert not decide(_record("always", manually_stopped=True), 0, 0, "d")[0]
    assert not decide(_record("on-failure"), 0, 0, "d")[0]
    assert decide(_record("on-failure"), 1, 0, "d")[0]
    assert decide(_record("on-failure", 3, restart_count=2), 1, 0, "d")[0]
    assert not decide(_record("on-failure", 3, restart_count=3), 1, 0, "d")[0]
    # back-off: 100 ms doubling to one minute, reset by a run of 10 s or more
    assert decide(_record("always", backoff_ms=100), 0, 1, "d")[1] == 200
    assert decide(_record("always", backoff_ms=MAX_BACKOFF_MS), 0, 1, "d")[1] == MAX_BACKOFF_MS
    assert decide(_record("always", backoff_ms=40_000), 0, 1, "d")[1] == MAX_BACKOFF_MS
    assert decide(_record("always", backoff_ms=6400), 0, 10, "d")[1] == 100


def test_on_failure_gives_up_after_n_restarts(env: Env) -> None:
    cid = env.create("exit", "3", policy="on-failure", retries=2)
    env.c.start(cid)
    _until(lambda: env.state(cid).restart_count == 2 and not env.state(cid).pending)
    time.sleep(1.0)  # a third restart would be due within 400 ms
    assert env.starts() == 3
    view = env.c.inspect(cid)
    assert view.restart_count == 2 and view.state.status == Status.CONTAINER_STATUS_EXITED


def test_on_failure_does_not_restart_a_clean_exit(env: Env) -> None:
    cid = env.create("exit", "0", policy="on-failure")
    env.c.start(cid)
    _until(lambda: env.state(cid).HasField("handled_started_at"))
    assert env.starts() == 1 and env.state(cid).restart_count == 0


def test_manual_stop_ends_always_and_a_manual_start_resets(env: Env) -> None:
    cid = env.create("sleep", policy="always")
    env.c.start(cid)
    env.c.stop(cid, 1, "")
    _until(lambda: env.state(cid).HasField("handled_started_at"))
    time.sleep(0.5)
    assert env.starts() == 1 and env.state(cid).manually_stopped
    env.c.start(cid)
    assert env.starts() == 2 and not env.state(cid).manually_stopped
    env.exec.kill_task(cid, signal.SIGHUP)  # not the stop signal: the policy stays in force
    _until(lambda: env.starts() == 3 and env.exec.running(cid))
    assert env.state(cid).restart_count == 1


def test_a_decided_restart_is_done_once_by_the_next_gateway(env: Env) -> None:
    cid = env.create("sleep", policy="always")
    env.c.start(cid)
    env.c.close()  # this gateway "crashes": its watcher and timers stop
    env.exec.kill_task(cid, signal.SIGSEGV)
    # A decision written, the restart not yet done (as if the gateway died in between):
    env.c.restarts._closed.clear()
    env.c.restarts._schedule = lambda cid, due: None  # type: ignore[method-assign]
    env.c.restarts.handle_exit(cid)
    assert env.state(cid).pending and env.state(cid).restart_count == 1
    env.c.restarts._closed.set()
    # The next gateway, started twice over the same state (sweep + a late watcher), restarts once.
    nxt = Containers(env.graph, env.exec, env.net, watch_interval=0.5, daemon_id="d1")
    try:
        nxt.sweep()
        nxt.restarts.handle_exit(cid)
        _until(lambda: env.exec.running(cid) and not env.state(cid).pending)
        time.sleep(0.3)
        assert env.starts() == 2 and env.state(cid).restart_count == 1
    finally:
        nxt.close()


def test_always_comes_back_after_a_daemon_restart_unless_stopped_does_not(env: Env) -> None:
    always = env.create("sleep", policy="always")
    unless = env.create("sleep", policy="unless-stopped")
    for cid in (always, unless):
        env.c.start(cid)
        env.c.stop(cid, 1, "")
    env.c.close()
    same = Containers(env.graph, env.exec, env.net, watch_interval=0.5, daemon_id="d1")
    same.sweep()
    time.sleep(0.3)
    same.close()
    assert not env.exec.running(always) and not env.exec.running(unless)
    new = Containers(env.graph, env.exec, env.net, watch_interval=0.5, daemon_id="d2")
    try:
        new.sweep()
        assert env.exec.running(always) and not env.exec.running(unless)
    finally:
        new.close()


def test_restarting_shows_and_rm_needs_force(env: Env) -> None:
    cid = env.create("exit", "1", policy="always")
    env.c.restarts._schedule = lambda cid, due: None  # type: ignore[method-assign]  # stay restarting
    env.c.start(cid)
    _until(lambda: env.state(cid).pending)
    assert env.c.inspect(cid).state.status == Status.CONTAINER_STATUS_RESTARTING
    assert [v.id for v in env.c.list_containers(False, [])] == [cid]
    with pytest.raises(errors.FailedPrecondition):
        env.c.remove(cid, force=False)
    env.c.remove(cid, force=True)
    assert cid not in env.graph.containers
    env.c.restarts.restart(cid)  # a timer that fires late finds nothing to start
    assert env.starts() == 1


def test_kill_of_a_restarting_container_cancels_the_restart(env: Env) -> None:
    cid = env.create("exit", "1", policy="always")
    env.c.restarts._schedule = lambda cid, due: None  # type: ignore[method-assign]
    env.c.start(cid)
    _until(lambda: env.state(cid).pending)
    env.c.kill(cid, "KILL")
    assert not env.state(cid).pending and env.state(cid).manually_stopped
    assert env.c.inspect(cid).state.status == Status.CONTAINER_STATUS_EXITED


def test_update_restart_policy_is_kept_and_watched(env: Env) -> None:
    from skiff.apiserver.lifecycle import Lifecycle

    cid = env.create("sleep")
    env.c.start(cid)
    Lifecycle.of(env.c).update(cid, types_pb2.HostConfig(
        memory_bytes=64 << 20, restart_policy=types_pb2.RestartPolicy(name="on-failure", maximum_retry_count=1)))
    rec = env.graph.containers[cid]
    assert rec.host_config.memory_bytes == 64 << 20 and rec.host_config.restart_policy.name == "on-failure"
    env.exec.kill_task(cid, signal.SIGSEGV)
    _until(lambda: env.starts() == 2 and env.exec.running(cid))


def test_update_is_put_back_when_execsvc_refuses(env: Env) -> None:
    from skiff.apiserver.lifecycle import Lifecycle

    cid = env.create("sleep")
    env.c.start(cid)

    def refuse(task_id: str, resources: object) -> None:
        raise errors.InvalidArgument("no")

    env.exec.update_task = refuse  # type: ignore[method-assign]
    with pytest.raises(errors.InvalidArgument):
        Lifecycle.of(env.c).update(cid, types_pb2.HostConfig(memory_bytes=64 << 20))
    assert env.graph.containers[cid].host_config.memory_bytes == 0


def test_update_of_a_never_started_container_is_stored(env: Env) -> None:
    from skiff.apiserver.lifecycle import Lifecycle

    cid = env.create("sleep")
    Lifecycle.of(env.c).update(cid, types_pb2.HostConfig(cpu_shares=512))
    assert env.graph.containers[cid].host_config.cpu_shares == 512
