"""The gateway end to end over gRPC: real servicers and server, fake graph/exec/net backends.

Each test starts the public API on a unix socket in a private temporary
directory and calls it through the generated stubs, asserting status codes and
ErrorInfo reasons, as a client in another process would see them.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from skiff.api.v1 import api_pb2, api_pb2_grpc
from skiff.apiserver.containers import Containers
from skiff.apiserver.server import PUBLIC_SERVICES, build
from skiff.common import errors, grpcerr
from skiff.graph.v1 import graph_pb2
from skiff.types.v1 import types_pb2

from .test_apiserver_fakes import FakeExec, FakeGraph, FakeNet

ROOT = Path(__file__).resolve().parents[2]
Status = types_pb2.ContainerStatus
Cond = api_pb2.WaitCondition


@dataclass
class Env:
    graph: FakeGraph
    exec: FakeExec
    net: FakeNet
    containers: Containers
    channel: grpc.Channel
    api: api_pb2_grpc.ContainerServiceStub
    images: api_pb2_grpc.ImageServiceStub
    system: api_pb2_grpc.SystemServiceStub

    def create(self, *argv: str, **host: object) -> str:
        config = types_pb2.ContainerConfig(image="busybox")
        if argv:
            config.cmd.values.extend(argv)
        req = api_pb2.CreateContainerRequest(config=config, host_config=types_pb2.HostConfig(**host))  # type: ignore[arg-type]
        return str(self.api.CreateContainer(req, timeout=5).id)

    def create_elsewhere(self, *argv: str, **host: object) -> str:
        """A container this gateway did not create (e.g. before it was restarted)."""
        config = types_pb2.ContainerConfig(image="busybox")
        config.cmd.values.extend(argv)
        req = graph_pb2.CreateContainerRequest(config=config, host_config=types_pb2.HostConfig(**host))  # type: ignore[arg-type]
        return str(self.graph.create_container(req).container.id)

    def run(self, *argv: str, **host: object) -> str:
        cid = self.create(*argv, **host)
        self.api.StartContainer(api_pb2.StartContainerRequest(container=cid), timeout=5)
        return cid

    def inspect(self, ref: str) -> api_pb2.Container:
        return self.api.InspectContainer(api_pb2.InspectContainerRequest(container=ref), timeout=5).container


@pytest.fixture
def env() -> Iterator[Env]:
    graph, exec_, net = FakeGraph(), FakeExec(), FakeNet()
    containers = Containers(graph, exec_, net, poll_interval=0.02, watch_interval=0.2)
    with tempfile.TemporaryDirectory(prefix="skiff-api-") as tmp:
        sock = f"unix://{tmp}/api.sock"
        gateway = build([sock], graph, exec_, net, containers=containers)
        gateway.service.start()
        ch = grpc.insecure_channel(sock)
        try:
            yield Env(graph, exec_, net, containers, ch, api_pb2_grpc.ContainerServiceStub(ch),
                      api_pb2_grpc.ImageServiceStub(ch), api_pb2_grpc.SystemServiceStub(ch))
        finally:
            ch.close()
            containers.close()
            gateway.service.stop(0)
            for thread in threading.enumerate():  # leave no watcher behind
                if thread.name.startswith("auto-remove"):
                    thread.join(5)
                    assert not thread.is_alive()


def failure(call: object, *args: object, **kwargs: object) -> tuple[grpc.StatusCode, str, str]:
    """(code, reason, message) of a call that must fail."""
    with pytest.raises(grpc.RpcError) as info:
        result = call(*args, **kwargs)  # type: ignore[operator]
        if hasattr(result, "__next__"):  # a response stream fails when read
            list(result)
    err = grpcerr.from_rpc_error(info.value)
    return info.value.code(), err.reason, err.message


# --- serving ---------------------------------------------------------------------------------


def test_health_serving_and_reflection_lists_public_services(env: Env) -> None:
    health = health_pb2_grpc.HealthStub(env.channel)
    for name in ("", *PUBLIC_SERVICES):
        resp = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    services = set(ProtoReflectionDescriptorDatabase(env.channel).get_services())
    assert {"skiff.api.v1.SystemService", "skiff.api.v1.ImageService",
            "skiff.api.v1.ContainerService"} <= services


def test_tcp_without_mutual_tls_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "skiff.apiserver", "-H", "tcp://127.0.0.1:0", "--exec-root", str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert proc.returncode == 1
    assert "mutual TLS" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_version_and_info(env: Env) -> None:
    version = env.system.GetVersion(api_pb2.GetVersionRequest(), timeout=5)
    assert version.api_version == "v1" and version.version and version.kernel_version
    env.run("sleep")
    env.run("exit", "3")
    info = env.system.GetInfo(api_pb2.GetInfoRequest(), timeout=5)
    assert (info.containers, info.containers_running, info.containers_stopped) == (2, 1, 1)
    assert (info.images, info.storage_driver, info.cgroup_version) == (1, "vfs", "v2")
    assert info.cpus >= 1 and info.memory_bytes > 0


# --- create / start --------------------------------------------------------------------------


def test_create_defaults_to_network_bridge_and_reads_created(env: Env) -> None:
    cid = env.create("sleep")
    view = env.inspect(cid[:10])
    assert view.state.status == Status.CONTAINER_STATUS_CREATED
    assert view.network_settings.network_mode == "bridge"
    assert view.host_config.network_mode == "bridge"
    assert view.rootfs.type == "overlay"


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ({"network_mode": "overlay"}, "INVALID_NETWORK_MODE"),
        ({"network_mode": "container:x"}, "INVALID_NETWORK_MODE"),
        ({"memory_bytes": -1}, "INVALID_ARGUMENT"),
        ({"pids_limit": -5}, "INVALID_ARGUMENT"),
    ],
)
def test_create_rejects_bad_host_config(env: Env, host: dict[str, object], reason: str) -> None:
    code, got, message = failure(env.create, "sleep", **host)
    assert (code, got) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert env.graph.containers == {}
    if "network_mode" in host:
        assert repr(host["network_mode"]) in message


def test_unknown_image_passes_through_unchanged(env: Env) -> None:
    req = api_pb2.CreateContainerRequest(config=types_pb2.ContainerConfig(image="nope"))
    code, reason, message = failure(env.api.CreateContainer, req, timeout=5)
    assert (code, reason, message) == (grpc.StatusCode.NOT_FOUND, errors.IMAGE_NOT_FOUND, "No such image: nope")


def test_name_in_use_keeps_holder_metadata(env: Env) -> None:
    req = api_pb2.CreateContainerRequest(name="web", config=types_pb2.ContainerConfig(image="busybox"))
    first = env.api.CreateContainer(req, timeout=5).id
    with pytest.raises(grpc.RpcError) as info:
        env.api.CreateContainer(req, timeout=5)
    err = grpcerr.from_rpc_error(info.value)
    assert (info.value.code(), err.reason, err.metadata) == (
        grpc.StatusCode.ABORTED, errors.NAME_IN_USE, {"container_id": first})


def test_start_builds_the_task_spec_and_is_idempotent(env: Env) -> None:
    cid = env.run("sleep", "100", memory_bytes=1 << 26, pids_limit=50)
    spec = env.exec.specs[cid]
    assert list(spec.args) == ["sleep", "100"]
    assert spec.hostname == cid[:12]
    assert spec.rootfs.type == "overlay"
    assert spec.netns_path == f"/run/skiff/netns/{cid[:12]}" and not spec.host_network
    assert (spec.memory_bytes, spec.pids_limit) == (1 << 26, 50)
    env.api.StartContainer(api_pb2.StartContainerRequest(container=cid), timeout=5)
    assert env.exec.calls.count("start_task") == 1
    view = env.inspect(cid)
    assert view.state.status == Status.CONTAINER_STATUS_RUNNING and view.state.pid == 4242
    assert view.network_settings.sandbox_key == spec.netns_path
    assert view.log_path == f"/logs/{cid}.json"


def test_start_host_network(env: Env) -> None:
    cid = env.run("sleep", network_mode="host")
    spec = env.exec.specs[cid]
    assert spec.host_network and spec.netns_path == ""
    assert env.inspect(cid).network_settings.network_mode == "host"


def test_start_failure_keeps_reason_and_leaves_nothing(env: Env) -> None:
    cid = env.create("missing")
    code, reason, _ = failure(env.api.StartContainer, api_pb2.StartContainerRequest(container=cid), timeout=5)
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, errors.COMMAND_NOT_FOUND)
    assert cid not in env.net.endpoints and not env.exec.running(cid)
    assert cid in env.graph.containers  # the record stays, as Docker's does


def test_start_without_its_rootfs_leaves_no_endpoint(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rootfs is asked for while the endpoint is made: when it fails, the endpoint goes."""
    cid = env.create_elsewhere("sleep")

    def gone(container_id: str) -> object:
        raise errors.NotFound(f"No such container: {container_id}", reason=errors.CONTAINER_NOT_FOUND)

    monkeypatch.setattr(env.graph, "get_rootfs", gone)
    code, reason, _ = failure(env.api.StartContainer, api_pb2.StartContainerRequest(container=cid), timeout=5)
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, errors.CONTAINER_NOT_FOUND)
    assert cid not in env.net.endpoints and cid not in env.exec.tasks


def test_the_first_start_of_a_container_created_here_asks_no_more(env: Env) -> None:
    """Created through this gateway: its record and rootfs are what CreateContainer answered,
    and it has no task yet; the start is the endpoint and StartTask."""
    cid = env.create("sleep")
    env.graph.calls.clear()
    env.exec.calls.clear()
    env.api.StartContainer(api_pb2.StartContainerRequest(container=cid), timeout=5)
    assert env.graph.calls == [] and env.exec.calls == ["start_task"]
    assert env.exec.specs[cid].rootfs == env.graph._rootfs(cid)
    env.exec.kill_task(cid, signal.SIGKILL)
    env.api.StartContainer(api_pb2.StartContainerRequest(container=cid), timeout=5)  # again: asks
    assert "get_task" in env.exec.calls and env.exec.running(cid)


def test_start_of_a_running_container_keeps_its_endpoint(env: Env) -> None:
    """The task is asked for beside the endpoint: a running container is left as it is."""
    cid = env.run("sleep")
    endpoint = env.net.endpoints[cid]
    env.api.StartContainer(api_pb2.StartContainerRequest(container=cid), timeout=5)
    assert env.exec.calls.count("start_task") == 1 and env.exec.calls.count("get_task") >= 1
    assert env.net.endpoints[cid] == endpoint and "delete_endpoint" not in env.net.calls
    assert env.inspect(cid).state.status == Status.CONTAINER_STATUS_RUNNING


def test_start_when_execsvc_cannot_tell_starts_nothing(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not knowing whether it runs, the start fails with execsvc's status (its endpoint, if made
    meanwhile, is released with those of other stopped containers)."""
    cid = env.create_elsewhere("sleep")

    def down(task_id: str) -> object:
        raise errors.Unavailable("execsvc is restarting", reason="SERVICE_UNAVAILABLE")

    monkeypatch.setattr(env.exec, "get_task", down)
    code, _, _ = failure(env.api.StartContainer, api_pb2.StartContainerRequest(container=cid), timeout=5)
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "start_task" not in env.exec.calls
    monkeypatch.undo()
    env.containers.release_exited()
    assert cid not in env.net.endpoints
    env.api.StartContainer(api_pb2.StartContainerRequest(container=cid), timeout=5)
    assert env.exec.running(cid)


def test_start_after_an_update_reads_the_updated_record(env: Env) -> None:
    """The gateway keeps the record of a container it created for its start: a write through
    it (here `update`) is what the start then reads."""
    cid = env.create("sleep", memory_bytes=1 << 26)
    env.api.UpdateContainer(api_pb2.UpdateContainerRequest(
        container=cid, host_config=types_pb2.HostConfig(memory_bytes=1 << 27)), timeout=5)
    env.api.StartContainer(api_pb2.StartContainerRequest(container=cid), timeout=5)
    assert env.exec.specs[cid].memory_bytes == 1 << 27


def test_start_failure_with_auto_remove_removes(env: Env) -> None:
    cid = env.create("missing", auto_remove=True)
    _, reason, _ = failure(env.api.StartContainer, api_pb2.StartContainerRequest(container=cid), timeout=5)
    assert reason == errors.COMMAND_NOT_FOUND
    assert cid not in env.graph.containers


def test_unknown_container(env: Env) -> None:
    code, reason, _ = failure(env.api.StartContainer, api_pb2.StartContainerRequest(container="zzz"), timeout=5)
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, errors.CONTAINER_NOT_FOUND)


# --- stop / kill / remove --------------------------------------------------------------------


def test_stop_sends_sigterm_only_when_it_suffices(env: Env) -> None:
    cid = env.run("sleep")
    env.api.StopContainer(api_pb2.StopContainerRequest(container=cid), timeout=5)
    assert env.exec.signals[cid] == [signal.SIGTERM]
    assert env.inspect(cid).state.exit_code == 143
    env.api.StopContainer(api_pb2.StopContainerRequest(container=cid), timeout=5)  # stopped: OK


def test_stop_escalates_to_sigkill(env: Env) -> None:
    cid = env.run("trap")
    started = time.monotonic()
    env.api.StopContainer(api_pb2.StopContainerRequest(container=cid, timeout_seconds=1), timeout=10)
    assert 0.9 <= time.monotonic() - started < 5
    assert env.exec.signals[cid] == [signal.SIGTERM, signal.SIGKILL]
    state = env.inspect(cid).state
    assert (state.status, state.exit_code) == (Status.CONTAINER_STATUS_EXITED, 137)


def test_stop_timeout_zero_and_custom_signal(env: Env) -> None:
    cid = env.run("trap")
    env.api.StopContainer(api_pb2.StopContainerRequest(container=cid, timeout_seconds=0, signal="USR1"), timeout=5)
    assert env.exec.signals[cid] == [signal.SIGUSR1]  # trap dies of anything but TERM
    cid = env.run("trap")
    env.api.StopContainer(api_pb2.StopContainerRequest(container=cid, timeout_seconds=0), timeout=5)
    assert env.exec.signals[cid] == [signal.SIGTERM, signal.SIGKILL]


@pytest.mark.parametrize(("text", "number"), [("", 9), ("KILL", 9), ("SIGHUP", 1), ("15", 15), ("usr2", 12)])
def test_kill_signals(env: Env, text: str, number: int) -> None:
    cid = env.run("sleep")
    env.api.KillContainer(api_pb2.KillContainerRequest(container=cid, signal=text), timeout=5)
    assert env.exec.signals[cid] == [number]


def test_kill_not_running_and_bad_signal(env: Env) -> None:
    cid = env.create("sleep")
    code, reason, message = failure(env.api.KillContainer, api_pb2.KillContainerRequest(container=cid), timeout=5)
    assert (code, reason, message) == (
        grpc.StatusCode.FAILED_PRECONDITION, errors.CONTAINER_NOT_RUNNING, f"Container {cid} is not running")
    env.api.StartContainer(api_pb2.StartContainerRequest(container=cid), timeout=5)
    for bad in ("SIGNOPE", "0", "99"):
        code, reason, _ = failure(env.api.KillContainer,
                                  api_pb2.KillContainerRequest(container=cid, signal=bad), timeout=5)
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_SIGNAL")
    assert env.exec.running(cid)


def test_remove_running_needs_force(env: Env) -> None:
    cid = env.run("sleep")
    code, reason, message = failure(env.api.RemoveContainer,
                                    api_pb2.RemoveContainerRequest(container=cid), timeout=5)
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, errors.CONTAINER_RUNNING)
    assert message == (f"You cannot remove a running container {cid}. Stop the container before "
                       "attempting removal or force remove")
    assert env.exec.running(cid) and cid in env.graph.containers

    env.api.RemoveContainer(api_pb2.RemoveContainerRequest(container=cid, force=True), timeout=5)
    assert env.exec.signals[cid] == [signal.SIGKILL]
    assert cid not in env.exec.tasks and cid not in env.exec.logs
    assert cid not in env.net.endpoints and cid not in env.graph.containers
    code, reason, _ = failure(env.api.InspectContainer, api_pb2.InspectContainerRequest(container=cid), timeout=5)
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, errors.CONTAINER_NOT_FOUND)


def test_remove_failure_keeps_the_record_for_a_retry(env: Env) -> None:
    cid = env.run("exit", "0")
    env.exec.fail_delete = errors.Unavailable("execsvc is down")
    code, _, _ = failure(env.api.RemoveContainer, api_pb2.RemoveContainerRequest(container=cid), timeout=5)
    assert code == grpc.StatusCode.UNAVAILABLE
    assert cid in env.graph.containers  # nothing half removed (its endpoint went at its exit)
    env.exec.fail_delete = None
    env.api.RemoveContainer(api_pb2.RemoveContainerRequest(container=cid), timeout=5)
    assert cid not in env.graph.containers and cid not in env.exec.tasks


def test_remove_link_removes_only_the_link(env: Env) -> None:
    db = env.create("true")
    web = env.create("true")
    db_name, web_name = env.graph.containers[db].name, env.graph.containers[web].name
    env.graph.containers[web].links.append(types_pb2.Link(parent_id=web, child_id=db, name="database"))
    env.api.RemoveContainer(api_pb2.RemoveContainerRequest(container=f"/{web_name}/database", remove_link=True),
                            timeout=5)
    assert list(env.inspect(web).links) == [] and env.inspect(db).id == db
    code, _, _ = failure(env.api.RemoveContainer, api_pb2.RemoveContainerRequest(
        container=f"/{web_name}/database", remove_link=True), timeout=5)
    assert code == grpc.StatusCode.NOT_FOUND
    code, _, message = failure(env.api.RemoveContainer, api_pb2.RemoveContainerRequest(
        container=db_name, remove_link=True), timeout=5)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "default link name" in message
    assert env.inspect(db).id == db


def test_list_with_sizes(env: Env) -> None:
    cid = env.create("true")
    req = api_pb2.ListContainersRequest(all=True, size=True)
    (c,) = [c for c in env.api.ListContainers(req, timeout=5).containers if c.id == cid]
    assert (c.size_rw, c.size_root_fs) == (10, 1010)
    (c,) = [c for c in env.api.ListContainers(api_pb2.ListContainersRequest(all=True), timeout=5).containers
            if c.id == cid]
    assert c.size_rw == 0


def test_remove_never_started(env: Env) -> None:
    cid = env.create("sleep")
    env.api.RemoveContainer(api_pb2.RemoveContainerRequest(container=cid), timeout=5)
    assert env.graph.containers == {}


# --- list ------------------------------------------------------------------------------------


def test_list_merges_in_a_constant_number_of_calls(env: Env) -> None:
    running = env.run("sleep")
    exited = env.run("exit", "2")
    created = env.create("sleep")
    env.graph.calls.clear()
    env.exec.calls.clear()

    listed = env.api.ListContainers(api_pb2.ListContainersRequest(all=True), timeout=5).containers
    assert [c.id for c in listed] == [created, exited, running]  # newest first
    assert [c.state.status for c in listed] == [
        Status.CONTAINER_STATUS_CREATED, Status.CONTAINER_STATUS_EXITED, Status.CONTAINER_STATUS_RUNNING]
    assert listed[1].state.exit_code == 2
    assert listed[2].network_settings.sandbox_key.startswith("/run/skiff/netns/")
    assert env.graph.calls == ["list_containers"] and env.exec.calls == ["list_tasks"]

    only_running = env.api.ListContainers(api_pb2.ListContainersRequest(), timeout=5).containers
    assert [c.id for c in only_running] == [running]


def test_list_filters(env: Env) -> None:
    running = env.run("sleep")
    exited = env.run("exit", "1")
    created = env.create("sleep")

    def ids(*filters: tuple[str, str], all_: bool = False) -> list[str]:
        req = api_pb2.ListContainersRequest(all=all_, filters=[types_pb2.Filter(key=k, value=v) for k, v in filters])
        return [c.id for c in env.api.ListContainers(req, timeout=5).containers]

    assert ids(("status", "exited")) == [exited]  # a status filter implies all
    assert ids(("status", "exited"), ("status", "created")) == [created, exited]
    assert ids(("id", running[:8]), all_=True) == [running]
    name = env.graph.containers[exited].name
    assert ids(("name", name), all_=True) == [exited]
    assert ids(("name", name), ("status", "running")) == []
    # label and ancestor go to graphsvc; exited is answered from the tasks.
    assert ids(("label", "a=b"), all_=True) == []
    assert ids(("exited", "1")) == [exited]
    assert ids(("exited", "0")) == []
    assert sorted(ids(("ancestor", "busybox"), all_=True)) == sorted([running, exited, created])
    code, reason, _ = failure(env.api.ListContainers, api_pb2.ListContainersRequest(
        filters=[types_pb2.Filter(key="bogus", value="a=b")]), timeout=5)
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNSUPPORTED_FILTER")
    code, _, _ = failure(env.api.ListContainers, api_pb2.ListContainersRequest(
        filters=[types_pb2.Filter(key="status", value="sleepy")]), timeout=5)
    assert code == grpc.StatusCode.INVALID_ARGUMENT


# --- wait ------------------------------------------------------------------------------------


def _wait(env: Env, cid: str, condition: int = 0, timeout: float = 5) -> api_pb2.WaitContainerResponse:
    return env.api.WaitContainer(api_pb2.WaitContainerRequest(container=cid, condition=condition),  # type: ignore[arg-type]
                                 timeout=timeout)


def _later(delay: float, fn: object, *args: object) -> threading.Timer:
    timer = threading.Timer(delay, fn, args)  # type: ignore[arg-type]
    timer.start()
    return timer


def test_wait_not_running(env: Env) -> None:
    assert _wait(env, env.create("sleep")).exit_code == 0  # never started: at once, 0
    assert _wait(env, env.run("exit", "5")).exit_code == 5
    cid = env.run("sleep")
    _later(0.1, env.exec.kill_task, cid, signal.SIGKILL)
    assert _wait(env, cid).exit_code == 137


def test_wait_by_a_name_of_64_hex_digits(env: Env) -> None:
    """A full id is asked for as a task while the record is read; a name that looks like
    one is not mistaken for it."""
    name = "a" * 64
    config = types_pb2.ContainerConfig(image="busybox")
    config.cmd.values.extend(["exit", "3"])
    cid = env.api.CreateContainer(api_pb2.CreateContainerRequest(name=name, config=config), timeout=5).id
    env.api.StartContainer(api_pb2.StartContainerRequest(container=cid), timeout=5)
    assert _wait(env, name).exit_code == 3
    assert _wait(env, cid).exit_code == 3


def test_wait_after_a_start_here_is_one_wait_task(env: Env) -> None:
    """A container started through this gateway is waited for with WaitTask alone; a task
    removed behind its back reads as never started (0), as before."""
    cid = env.run("exit", "4")
    env.exec.calls.clear()
    assert _wait(env, cid).exit_code == 4
    assert "get_task" not in env.exec.calls
    env.exec.delete_task(cid, force=True, remove_logs=True)
    assert _wait(env, cid).exit_code == 0


def test_wait_honours_the_callers_deadline(env: Env) -> None:
    cid = env.run("sleep")
    code, _, _ = failure(_wait, env, cid, Cond.WAIT_CONDITION_NOT_RUNNING, 0.3)
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    code, _, _ = failure(_wait, env, cid, Cond.WAIT_CONDITION_REMOVED, 0.3)
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_wait_next_exit(env: Env) -> None:
    cid = env.run("exit", "4")
    timer = _later(0.2, env.api.StartContainer, api_pb2.StartContainerRequest(container=cid))
    assert _wait(env, cid, Cond.WAIT_CONDITION_NEXT_EXIT).exit_code == 4
    timer.join()
    assert env.exec.calls.count("start_task") == 2


def test_wait_removed_with_auto_remove(env: Env) -> None:
    cid = env.run("sleep", auto_remove=True)
    _later(0.2, env.exec.kill_task, cid, signal.SIGTERM)
    assert _wait(env, cid, Cond.WAIT_CONDITION_REMOVED).exit_code == 143
    assert cid not in env.graph.containers  # gone for every caller, its name free
    # The exited task and the endpoint follow, off the waiter's path.
    _until(lambda: cid not in env.exec.tasks and cid not in env.net.endpoints)


def _until(cond: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cond()


def test_auto_remove_cut_short_is_finished_by_the_sweep(env: Env) -> None:
    """The record goes first; a task and an endpoint left without one (execsvc failed, or the gateway
    died meanwhile) are removed by the start-up sweep, which leaves everything else alone."""
    keep = env.run("exit", "0")
    running = env.run("sleep")
    env.exec.fail_delete = errors.Internal("execsvc broke")
    cid = env.run("sleep", auto_remove=True)
    _later(0.2, env.exec.kill_task, cid, signal.SIGTERM)
    assert _wait(env, cid, Cond.WAIT_CONDITION_REMOVED).exit_code == 143
    assert cid not in env.graph.containers
    _until(lambda: cid not in env.net.endpoints)
    assert cid in env.exec.tasks  # its deletion failed
    env.exec.fail_delete = None
    env.containers.sweep()
    assert cid not in env.exec.tasks and cid not in env.net.endpoints
    assert {keep, running} <= set(env.graph.containers) and {keep, running} <= set(env.exec.tasks)
    assert running in env.net.endpoints
    env.exec.kill_task(running, signal.SIGKILL)


def test_wait_removed_before_start(env: Env) -> None:
    """`run --rm` may ask for REMOVED before it starts the container: the code is still the exit's."""
    cid = env.create("exit", "7", auto_remove=True)
    starter = _later(0.2, env.api.StartContainer, api_pb2.StartContainerRequest(container=cid))
    assert _wait(env, cid, Cond.WAIT_CONDITION_REMOVED).exit_code == 7
    assert cid not in env.graph.containers
    starter.join(10)  # the removal may be done before StartContainer has answered


def test_sweep_removes_exited_auto_remove_containers(env: Env) -> None:
    """After a gateway restart nothing watches them: the start-up sweep does."""
    keep = env.run("exit", "0")
    gone = env.create("exit", "0", auto_remove=True)
    never_started = env.create("sleep", auto_remove=True)
    env.exec.start_task(env_spec(gone, ["exit", "0"]))  # started behind the gateway's back
    watched = env.create("sleep", auto_remove=True)
    env.exec.start_task(env_spec(watched, ["sleep"]))
    env.containers.sweep_in_background().join(5)
    assert gone not in env.graph.containers
    assert {keep, never_started, watched} <= set(env.graph.containers)
    env.exec.kill_task(watched, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while watched in env.graph.containers and time.monotonic() < deadline:
        time.sleep(0.02)
    assert watched not in env.graph.containers


def env_spec(cid: str, argv: list[str]) -> object:
    from skiff.exec.v1 import exec_pb2

    return exec_pb2.TaskSpec(id=cid, args=argv)


# --- logs and attach -------------------------------------------------------------------------


def test_logs(env: Env) -> None:
    never = env.create("sleep")
    assert list(env.api.ContainerLogs(api_pb2.ContainerLogsRequest(container=never), timeout=5)) == []
    cid = env.run("sleep")
    env.exec.emit(cid, b"out\n")
    env.exec.emit(cid, b"err\n", types_pb2.LOG_STREAM_STDERR)
    req = api_pb2.ContainerLogsRequest(container=cid, tail=-1, stderr=True)
    assert [r.entry.data for r in env.api.ContainerLogs(req, timeout=5)] == [b"err\n"]
    follow = env.api.ContainerLogs(api_pb2.ContainerLogsRequest(container=cid, tail=-1, follow=True), timeout=5)
    assert next(follow).entry.data == b"out\n"
    assert next(follow).entry.data == b"err\n"
    _later(0.1, env.exec.emit, cid, b"late\n")
    assert next(follow).entry.data == b"late\n"
    env.exec.kill_task(cid, signal.SIGKILL)
    assert list(follow) == []


def test_attached_run_streams_output_then_exit(env: Env) -> None:
    cid = env.run("echo", "hello")  # exits before attach: logs=True replays it
    opts = api_pb2.AttachOptions(container=cid, stdout=True, stderr=True, logs=True)
    responses = list(env.api.AttachContainer(iter([api_pb2.AttachContainerRequest(options=opts)]), timeout=5))
    assert [r.WhichOneof("part") for r in responses] == ["output", "exit"]
    assert responses[0].output.data == b"hello\n"
    assert responses[-1].exit.exit_code == 0


def test_attach_live_only_new_output(env: Env) -> None:
    cid = env.run("sleep")
    env.exec.emit(cid, b"before\n")
    opts = api_pb2.AttachOptions(container=cid)
    stream = env.api.AttachContainer(iter([api_pb2.AttachContainerRequest(options=opts)]), timeout=5)
    _later(0.2, env.exec.emit, cid, b"after\n")
    _later(0.4, env.exec.kill_task, cid, signal.SIGKILL)
    responses = list(stream)
    assert [r.output.data for r in responses[:-1]] == [b"after\n"]
    assert responses[-1].exit.exit_code == 137


def test_attach_to_start_again_waits_for_the_next_run(env: Env) -> None:
    """`start -a` of an exited container: the attach comes first and must not answer with
    the last run's exit status while the new start is still on its way."""
    cid = env.run("sleep")
    env.exec.kill_task(cid, signal.SIGKILL)
    opts = api_pb2.AttachOptions(container=cid, await_start=True)
    stream = env.api.AttachContainer(iter([api_pb2.AttachContainerRequest(options=opts)]), timeout=5)
    stream.initial_metadata()
    _later(0.3, env.api.StartContainer, api_pb2.StartContainerRequest(container=cid))
    _later(0.6, env.exec.kill_task, cid, signal.SIGTERM)
    responses = list(stream)
    assert responses[-1].exit.exit_code == 143


def test_attach_with_start_starts_it_and_says_so(env: Env) -> None:
    """`run` in one call: the gateway starts the container once the stream is registered."""
    cid = env.create("echo", "hello")
    opts = api_pb2.AttachOptions(container=cid, stdout=True, stderr=True, logs=True, await_start=True, start=True)
    stream = env.api.AttachContainer(iter([api_pb2.AttachContainerRequest(options=opts)]), timeout=5)
    assert ("skiff-attach-start", "1") in stream.initial_metadata()
    responses = list(stream)
    assert [r.WhichOneof("part") for r in responses] == ["output", "exit"]
    assert responses[0].output.data == b"hello\n" and responses[-1].exit.exit_code == 0
    assert not responses[-1].exit.removed  # not an auto-remove container: it stays
    assert cid in env.graph.containers


def test_attach_with_start_again_follows_the_new_run(env: Env) -> None:
    """Of an exited container (`start -a`): the new run's output and exit, not the last one's."""
    cid = env.run("sleep")
    env.exec.kill_task(cid, signal.SIGKILL)
    opts = api_pb2.AttachOptions(container=cid, await_start=True, start=True)
    stream = env.api.AttachContainer(iter([api_pb2.AttachContainerRequest(options=opts)]), timeout=5)
    stream.initial_metadata()
    _later(0.3, env.exec.kill_task, cid, signal.SIGTERM)
    assert list(stream)[-1].exit.exit_code == 143


def test_attach_with_start_failure_ends_before_the_metadata(env: Env) -> None:
    """A failed start is the stream's status, as StartContainer's; --rm removes the container."""
    cid = env.create("missing", auto_remove=True)
    opts = api_pb2.AttachOptions(container=cid, await_start=True, start=True, await_removed=True)
    stream = env.api.AttachContainer(iter([api_pb2.AttachContainerRequest(options=opts)]), timeout=5)
    code, reason, _ = failure(lambda: list(stream))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "COMMAND_NOT_FOUND")
    assert ("skiff-attach-start", "1") not in (stream.initial_metadata() or ())
    assert cid not in env.graph.containers


def test_attach_await_removed_sends_the_exit_once_removed(env: Env) -> None:
    """`run --rm` without WaitContainer(REMOVED): when the exit status arrives, the container is
    gone and its name is free; the output came first, and the exit code is the container's."""
    config = types_pb2.ContainerConfig(image="busybox", cmd=types_pb2.StringList(values=["sleep"]))
    create = api_pb2.CreateContainerRequest(name="once", config=config,
                                            host_config=types_pb2.HostConfig(auto_remove=True))
    cid = env.api.CreateContainer(create, timeout=5).id
    opts = api_pb2.AttachOptions(container=cid, stdout=True, stderr=True, logs=True, await_start=True, start=True,
                                 await_removed=True)
    stream = env.api.AttachContainer(iter([api_pb2.AttachContainerRequest(options=opts)]), timeout=10)
    stream.initial_metadata()
    _later(0.2, env.exec.emit, cid, b"out\n")
    _later(0.4, env.exec.kill_task, cid, signal.SIGTERM)
    responses = list(stream)
    assert [r.WhichOneof("part") for r in responses] == ["output", "exit"]
    assert responses[0].output.data == b"out\n"
    assert responses[-1].exit.exit_code == 143 and responses[-1].exit.removed
    assert cid not in env.graph.containers
    create.host_config.auto_remove = False
    assert env.api.CreateContainer(create, timeout=5).id  # the name is free at once


def test_two_attached_runs_both_get_the_exit_once_removed(env: Env) -> None:
    """With two streams attached, neither removes the container under the other: the last one
    out lets the watcher remove it, and both exit statuses say it is gone."""
    cid = env.create("sleep", auto_remove=True)
    opts = api_pb2.AttachOptions(container=cid, await_start=True, await_removed=True)
    watcher = env.api.AttachContainer(iter([api_pb2.AttachContainerRequest(options=opts)]), timeout=10)
    watcher.initial_metadata()
    opts.start = True
    runner = env.api.AttachContainer(iter([api_pb2.AttachContainerRequest(options=opts)]), timeout=10)
    runner.initial_metadata()
    _later(0.3, env.exec.kill_task, cid, signal.SIGKILL)
    for stream in (runner, watcher):
        last = list(stream)[-1]
        assert last.exit.exit_code == 137 and last.exit.removed
    assert cid not in env.graph.containers
    _until(lambda: cid not in env.exec.tasks)


def test_attach_cancelled_by_the_client_releases_the_stream(env: Env) -> None:
    cid = env.run("sleep")
    opts = api_pb2.AttachOptions(container=cid, logs=True)
    stream = env.api.AttachContainer(iter([api_pb2.AttachContainerRequest(options=opts)]))
    env.exec.emit(cid, b"x\n")
    assert next(stream).output.data == b"x\n"
    stream.cancel()
    deadline = time.monotonic() + 5  # the gateway cancels its upstream log stream too
    while not env.exec.streams[-1].cancelled and time.monotonic() < deadline:
        time.sleep(0.02)
    assert env.exec.streams[-1].cancelled
    assert env.exec.running(cid)  # the container's life is not tied to the attach


def test_attach_errors(env: Env) -> None:
    cid = env.run("sleep")
    keys = api_pb2.AttachOptions(container=cid, stdin=True, detach_keys="ctrl-1")
    code, _, msg = failure(env.api.AttachContainer, iter([api_pb2.AttachContainerRequest(options=keys)]),
                           timeout=5)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "Invalid detach keys (ctrl-1)" in msg
    code, _, _ = failure(env.api.AttachContainer, iter([api_pb2.AttachContainerRequest(stdin=b"x")]), timeout=5)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    missing = api_pb2.AttachOptions(container="nope")
    code, reason, _ = failure(env.api.AttachContainer, iter([api_pb2.AttachContainerRequest(options=missing)]),
                              timeout=5)
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, errors.CONTAINER_NOT_FOUND)


# --- images ----------------------------------------------------------------------------------


def test_import_streams_chunks_through(env: Env) -> None:
    def requests() -> Iterator[api_pb2.ImportImageRequest]:
        yield api_pb2.ImportImageRequest(metadata=api_pb2.ImportImageMetadata(reference="mine:1", message="m"))
        for i in range(5):
            yield api_pb2.ImportImageRequest(chunk=bytes([i]) * 1000)

    image = env.images.ImportImage(requests(), timeout=5).image
    assert image.repo_tags == ["mine:1"] and image.size == 5000 and image.comment == "m"
    assert len(env.graph.imported_chunks) == 5
    code, _, _ = failure(env.images.ImportImage, iter([api_pb2.ImportImageRequest(chunk=b"x")]), timeout=5)
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_images_list_inspect_remove(env: Env) -> None:
    listed = env.images.ListImages(api_pb2.ListImagesRequest(), timeout=5).images
    assert [i.repo_tags[0] for i in listed] == ["busybox:latest"]
    env.create("sleep")
    image = env.images.InspectImage(api_pb2.InspectImageRequest(image="busybox"), timeout=5).image
    assert (image.id, image.containers, image.os) == (listed[0].id, 1, "linux")
    code, reason, _ = failure(env.images.RemoveImage, api_pb2.RemoveImageRequest(image="busybox"), timeout=5)
    assert (code, reason) == (grpc.StatusCode.ABORTED, errors.IMAGE_IN_USE)
    items = env.images.RemoveImage(api_pb2.RemoveImageRequest(image="busybox", force=True), timeout=5).items
    assert [i.WhichOneof("item") for i in items] == ["untagged", "deleted"]
    code, reason, _ = failure(env.images.InspectImage, api_pb2.InspectImageRequest(image="busybox"), timeout=5)
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, errors.IMAGE_NOT_FOUND)


# --- interactive attach: stdin, resize, detach keys ------------------------------------------


def _interactive(env: Env, *argv: str, tty: bool = False, stdin_once: bool = True) -> str:
    config = types_pb2.ContainerConfig(image="busybox", tty=tty, open_stdin=True, stdin_once=stdin_once)
    config.cmd.values.extend(argv)
    cid = env.api.CreateContainer(api_pb2.CreateContainerRequest(config=config), timeout=5).id
    env.api.StartContainer(api_pb2.StartContainerRequest(container=cid), timeout=5)
    return str(cid)


def _requests(first: api_pb2.AttachOptions, *parts: api_pb2.AttachContainerRequest,
              hold: threading.Event | None = None) -> Iterator[api_pb2.AttachContainerRequest]:
    """The options, the parts, then (with ``hold``) no EOF until it is set."""
    yield api_pb2.AttachContainerRequest(options=first)
    yield from parts
    if hold is not None:
        hold.wait(10)


def test_attach_stdin_reaches_the_container_and_eof_closes_it(env: Env) -> None:
    cid = _interactive(env, "cat")
    opts = api_pb2.AttachOptions(container=cid, stdin=True, stdout=True, logs=True)
    parts = [api_pb2.AttachContainerRequest(stdin=b"hello "), api_pb2.AttachContainerRequest(stdin=b"you\n")]
    responses = list(env.api.AttachContainer(_requests(opts, *parts), timeout=10))
    assert [r.WhichOneof("part") for r in responses] == ["output", "exit"]
    assert responses[0].output.data == b"hello you\n" and responses[1].exit.exit_code == 0
    assert cid in env.exec.stdin_closed


def test_attach_eof_keeps_stdin_open_without_stdin_once(env: Env) -> None:
    cid = _interactive(env, "cat", stdin_once=False)
    opts = api_pb2.AttachOptions(container=cid, stdin=True, stdout=True)
    stream = env.api.AttachContainer(_requests(opts, api_pb2.AttachContainerRequest(stdin=b"x")), timeout=10)
    deadline = time.monotonic() + 5
    while env.exec.stdin.get(cid) != [b"x"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert env.exec.stdin.get(cid) == [b"x"]
    time.sleep(0.2)
    assert cid not in env.exec.stdin_closed and env.exec.running(cid)
    stream.cancel()


def test_detach_keys_end_the_stream_and_leave_the_container_running(env: Env) -> None:
    cid = _interactive(env, "cat", tty=True)
    hold = threading.Event()
    size = types_pb2.TerminalSize(rows=24, cols=80)
    opts = api_pb2.AttachOptions(container=cid, stdin=True, stdout=True, detach_keys="ctrl-a,x")
    parts = [api_pb2.AttachContainerRequest(resize=size), api_pb2.AttachContainerRequest(stdin=b"ls\x01"),
             api_pb2.AttachContainerRequest(stdin=b"x"), api_pb2.AttachContainerRequest(stdin=b"never")]
    try:
        responses = list(env.api.AttachContainer(_requests(opts, *parts, hold=hold), timeout=10))
    finally:
        hold.set()
    assert [r.WhichOneof("part") for r in responses] == ["detached"]
    assert env.exec.stdin[cid] == [b"ls"]  # the keys never reach the container
    assert env.exec.resizes == [(24, 80)]
    time.sleep(0.2)
    assert env.exec.running(cid) and cid not in env.exec.stdin_closed
    # Another client attaches and is heard.
    opts = api_pb2.AttachOptions(container=cid, stdin=True, stdout=True)
    list(env.api.AttachContainer(_requests(opts, api_pb2.AttachContainerRequest(stdin=b"\n")), timeout=10))
    assert env.exec.stdin[cid] == [b"ls", b"\n"] and not env.exec.running(cid)


def test_stdin_is_ignored_for_a_container_without_open_stdin(env: Env) -> None:
    cid = env.run("sleep")
    opts = api_pb2.AttachOptions(container=cid, stdin=True)
    stream = env.api.AttachContainer(_requests(opts, api_pb2.AttachContainerRequest(stdin=b"\x10\x11")), timeout=10)
    _later(0.3, env.exec.kill_task, cid, signal.SIGKILL)
    assert [r.WhichOneof("part") for r in stream] == ["exit"]
    assert cid not in env.exec.stdin


def test_network_is_released_at_stop_and_at_exit_and_made_again_at_start(env: Env) -> None:
    """As Docker: a stopped container gives back its address and ports; start takes them again."""
    cid = env.run("sleep")
    assert cid in env.net.endpoints
    env.api.StopContainer(api_pb2.StopContainerRequest(container=cid, timeout_seconds=1), timeout=10)
    assert cid not in env.net.endpoints and "release_endpoint" in env.net.calls  # when stop returns
    assert cid in env.graph.containers and not env.inspect(cid).network_settings.ip_address
    env.api.StartContainer(api_pb2.StartContainerRequest(container=cid), timeout=5)
    assert cid in env.net.endpoints
    other = env.run("sleep")
    env.exec.kill_task(cid, signal.SIGKILL)  # an exit nobody asked for: the periodic pass releases it
    deadline = time.monotonic() + 10
    while env.exec.running(cid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert env.containers.release_exited() == 1
    assert cid not in env.net.endpoints and cid in env.graph.containers
    assert other in env.net.endpoints  # a running one keeps its endpoint


def test_mac_address_is_checked_at_create(env: Env) -> None:
    cid = env.create("sleep", mac_address="02:AA:bb:cc:dd:01")
    assert env.graph.containers[cid].host_config.mac_address == "02:aa:bb:cc:dd:01"
    for mac, mode in (("nonsense", ""), ("01:00:5e:00:00:01", ""), ("02:aa:bb:cc:dd:01", "host")):
        req = api_pb2.CreateContainerRequest(config=types_pb2.ContainerConfig(image="busybox"),
                                             host_config=types_pb2.HostConfig(mac_address=mac, network_mode=mode))
        code, _, message = failure(env.api.CreateContainer, req, timeout=5)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, message
