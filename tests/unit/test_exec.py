"""`skiff exec` without root: the exec config execsvc writes, the gateway's
ExecContainer over fake backends, and the CLI's parsing."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from skiff.api.v1 import api_pb2
from skiff.apiserver.callctx import Call
from skiff.apiserver.exec import Execs
from skiff.cli.main import build_parser
from skiff.common import errors
from skiff.exec.v1 import exec_pb2
from skiff.execsvc.exec import exec_config, merge_env
from skiff.types.v1 import types_pb2

CFG = {"process": {"env": ["PATH=/bin", "FOO=1"], "cwd": "/srv", "user": {"uid": 0, "gid": 0}}}


def test_exec_config_inherits_and_overrides_the_containers_process() -> None:
    cfg = exec_config(CFG, exec_pb2.ExecSpec(args=["sh"]))
    assert cfg == {"args": ["sh"], "env": ["PATH=/bin", "FOO=1"], "cwd": "/srv", "user": {"uid": 0, "gid": 0},
                   "terminal": False, "consoleSize": {"height": 0, "width": 0}}
    cfg = exec_config(CFG, exec_pb2.ExecSpec(args=["id"], env=["FOO=2", "BAR=3"], user="nobody", working_dir="/"))
    assert cfg["env"] == ["PATH=/bin", "FOO=2", "BAR=3"]
    assert cfg["user"] == {"uid": 0, "gid": 0, "username": "nobody"}
    assert cfg["cwd"] == "/"
    assert exec_config(CFG, exec_pb2.ExecSpec(args=["id"], user="1000:1000"))["user"] == {"uid": 1000, "gid": 1000}


def test_exec_config_rejects_no_command_and_bad_env() -> None:
    with pytest.raises(errors.InvalidArgument):
        exec_config(CFG, exec_pb2.ExecSpec())
    with pytest.raises(errors.InvalidArgument):
        exec_config(CFG, exec_pb2.ExecSpec(args=["x"], env=["=bad"]))
    assert merge_env(["A=1"], ["A=2"]) == ["A=2"]


class FakeGraph:
    def get_container(self, ref: str) -> SimpleNamespace:
        if ref == "missing":
            raise errors.NotFound(f"No such container: {ref}", reason=errors.CONTAINER_NOT_FOUND)
        return SimpleNamespace(id=f"{ref}-id")


class FakeExec:
    def __init__(self, status: int = types_pb2.CONTAINER_STATUS_RUNNING):
        self.status = status
        self.started: list[exec_pb2.ExecSpec] = []

    def get_task(self, task_id: str) -> exec_pb2.Task:
        return exec_pb2.Task(id=task_id, state=types_pb2.ContainerState(status=self.status))

    def start_exec(self, spec: exec_pb2.ExecSpec) -> None:
        self.started.append(spec)

    def attach_exec(self, task_id: str, exec_id: str, call: Call) -> Iterator[exec_pb2.AttachExecResponse]:
        yield exec_pb2.AttachExecResponse(output=types_pb2.LogEntry(stream=types_pb2.LOG_STREAM_STDOUT, data=b"hi\n"))
        yield exec_pb2.AttachExecResponse(exit_code=3)


def _run(exec_: FakeExec, **opts: object) -> list[api_pb2.ExecContainerResponse]:
    first = api_pb2.ExecContainerRequest(options=api_pb2.ExecOptions(**opts))  # type: ignore[arg-type]
    return list(Execs(FakeGraph(), exec_).run(iter([first]), Call()))  # type: ignore[arg-type]


def test_gateway_streams_output_then_the_exit_status() -> None:
    fake = FakeExec()
    out = _run(fake, container="web", cmd=["sh", "-c", "echo hi"], env=["A=1"], user="nobody")
    assert [r.WhichOneof("part") for r in out] == ["output", "exit"]
    assert out[0].output.data == b"hi\n" and out[1].exit.exit_code == 3
    spec = fake.started[0]
    assert (spec.task_id, list(spec.args), list(spec.env), spec.user) == ("web-id", ["sh", "-c", "echo hi"],
                                                                           ["A=1"], "nobody")
    assert len(spec.exec_id) == 32


def test_gateway_detached_returns_at_once() -> None:
    out = _run(FakeExec(), container="web", cmd=["true"], detach=True)
    assert [r.exit.exit_code for r in out] == [0]


def test_gateway_refuses_a_container_that_is_not_running() -> None:
    with pytest.raises(errors.FailedPrecondition) as e:
        _run(FakeExec(types_pb2.CONTAINER_STATUS_EXITED), container="web", cmd=["true"])
    assert (e.value.reason, str(e.value)) == (errors.CONTAINER_NOT_RUNNING, "Container web-id is not running")
    with pytest.raises(errors.NotFound):
        _run(FakeExec(), container="missing", cmd=["true"])
    with pytest.raises(errors.InvalidArgument):
        _run(FakeExec(), container="web")
    with pytest.raises(errors.InvalidArgument, match="Invalid detach keys"):
        _run(FakeExec(), container="web", cmd=["sh"], stdin=True, detach_keys="ctrl-")


def test_cli_parses_exec_flags_before_the_container_only() -> None:
    args = build_parser().parse_args(["exec", "-d", "-e", "A=1", "-u", "nobody", "-w", "/tmp", "web", "ls", "-l"])
    assert (args.detach, args.env, args.user, args.workdir) == (True, ["A=1"], "nobody", "/tmp")
    assert (args.container, args.command) == ("web", ["ls", "-l"])
