"""execsvc's gRPC surface over the real runtime: start, state, logs, wait, delete."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from skiff.common import errors, grpcerr
from skiff.common.server import Service, channel
from skiff.exec.v1 import exec_pb2, exec_pb2_grpc
from skiff.execsvc.runtime import Runtime
from skiff.execsvc.servicer import ExecServicer, Tasks
from skiff.types.v1 import types_pb2

pytestmark = pytest.mark.kernel

CID = "e" * 64


@pytest.fixture
def stub(runtime: Runtime, tmp_path: Path) -> Iterator[exec_pb2_grpc.ExecServiceStub]:
    svc = Service("execsvc-test", [f"unix://{tmp_path}/exec.sock"])
    svc.add(exec_pb2_grpc.add_ExecServiceServicer_to_server, ExecServicer(Tasks(runtime, tmp_path / "data")),
            "skiff.exec.v1.ExecService")
    svc.start()
    yield exec_pb2_grpc.ExecServiceStub(channel(f"unix://{tmp_path}/exec.sock"))
    svc.stop(0)


def spec(make_rootfs, *args: str) -> exec_pb2.TaskSpec:
    mount, _ = make_rootfs()
    return exec_pb2.TaskSpec(id=CID, args=list(args), env=["PATH=/bin"], hostname="tasky",
                             rootfs=types_pb2.Mount(type=mount.type, source=mount.source, options=mount.options))


def test_start_wait_logs_delete(stub, make_rootfs, tmp_path: Path) -> None:
    task = stub.StartTask(exec_pb2.StartTaskRequest(spec=spec(make_rootfs, "sh", "-c", "echo $(hostname); exit 4")),
                          timeout=30).task
    assert task.log_path == str(tmp_path / "data" / "containers" / CID / f"{CID}-json.log")
    done = stub.WaitTask(exec_pb2.WaitTaskRequest(id=CID), timeout=30)
    assert done.exit_code == 4
    state = stub.GetTask(exec_pb2.GetTaskRequest(id=CID), timeout=5).task.state
    assert state.status == types_pb2.CONTAINER_STATUS_EXITED and state.exit_code == 4
    entries = [r.entry for r in stub.ReadLogs(exec_pb2.ReadLogsRequest(id=CID), timeout=10)]
    assert [(e.stream, e.data) for e in entries] == [(types_pb2.LOG_STREAM_STDOUT, b"tasky\n")]
    assert not list(stub.ReadLogs(exec_pb2.ReadLogsRequest(id=CID, tail=0), timeout=10))
    # A second start runs it again and appends to the same log.
    stub.StartTask(exec_pb2.StartTaskRequest(spec=spec(make_rootfs, "echo", "again")), timeout=30)
    stub.WaitTask(exec_pb2.WaitTaskRequest(id=CID), timeout=30)
    assert [r.entry.data for r in stub.ReadLogs(exec_pb2.ReadLogsRequest(id=CID), timeout=10)] == [
        b"tasky\n", b"again\n"]
    stub.DeleteTask(exec_pb2.DeleteTaskRequest(id=CID, remove_logs=True), timeout=10)
    assert not (tmp_path / "data" / "containers" / CID).exists()
    stub.DeleteTask(exec_pb2.DeleteTaskRequest(id=CID), timeout=10)  # idempotent


def test_errors_carry_reasons(stub, make_rootfs) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.StartTask(exec_pb2.StartTaskRequest(spec=spec(make_rootfs, "no-such-cmd")), timeout=30)
    err = grpcerr.from_rpc_error(info.value)
    assert isinstance(err, errors.FailedPrecondition) and err.reason == errors.COMMAND_NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        stub.GetTask(exec_pb2.GetTaskRequest(id=CID), timeout=5)  # the failed start left nothing
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_running_task_is_killed_and_deleted(stub, make_rootfs) -> None:
    stub.StartTask(exec_pb2.StartTaskRequest(spec=spec(make_rootfs, "sleep", "60")), timeout=30)
    with pytest.raises(grpc.RpcError) as info:
        stub.DeleteTask(exec_pb2.DeleteTaskRequest(id=CID), timeout=10)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as info:
        stub.StartTask(exec_pb2.StartTaskRequest(spec=spec(make_rootfs, "true")), timeout=30)
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    stub.KillTask(exec_pb2.KillTaskRequest(id=CID, signal=9), timeout=5)
    assert stub.WaitTask(exec_pb2.WaitTaskRequest(id=CID), timeout=30).exit_code == 137
    stub.DeleteTask(exec_pb2.DeleteTaskRequest(id=CID, remove_logs=True), timeout=10)


def test_a_follow_ends_with_the_exit_status(stub, make_rootfs) -> None:
    """A followed log ends at the exit, all of it read, and says how the task ended (trailing
    metadata), so an attached client needs no WaitTask; a plain read says nothing of it."""
    from skiff.common.streams import EXIT_CODE_KEY, OOM_KILLED_KEY

    stub.StartTask(exec_pb2.StartTaskRequest(spec=spec(make_rootfs, "sh", "-c", "echo one; sleep 0.3; exit 6")),
                   timeout=30)
    try:
        follow = stub.ReadLogs(exec_pb2.ReadLogsRequest(id=CID, follow=True, attach=True), timeout=60)
        assert [r.entry.data for r in follow] == [b"one\n"]
        assert dict(follow.trailing_metadata()) == {EXIT_CODE_KEY: "6", OOM_KILLED_KEY: "0"}
        plain = stub.ReadLogs(exec_pb2.ReadLogsRequest(id=CID), timeout=10)
        assert len(list(plain)) == 1 and EXIT_CODE_KEY not in dict(plain.trailing_metadata())
    finally:
        stub.DeleteTask(exec_pb2.DeleteTaskRequest(id=CID, force=True, remove_logs=True), timeout=30)
