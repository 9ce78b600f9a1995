"""The gateway's commit freezes a running container while graphsvc reads its layer (Docker's --pause)."""

from __future__ import annotations

import pytest

from skiff.api.v1 import api_pb2
from skiff.apiserver.imagetools import ImageToolServicer
from skiff.common import errors
from skiff.exec.v1 import exec_pb2
from skiff.graph.v1 import graph_pb2
from skiff.types.v1 import types_pb2

CID = "c" * 64


class Recorder:
    def __init__(self, status: int | None, fail: bool = False):
        self.calls: list[str] = []
        self.status = status
        self.fail = fail

    # graph
    def get_container(self, ref: str) -> graph_pb2.Container:
        return graph_pb2.Container(id=CID, name=ref)

    # exec
    def get_task(self, task_id: str) -> exec_pb2.Task:
        if self.status is None:
            raise errors.NotFound("never started")
        return exec_pb2.Task(id=task_id, state=types_pb2.ContainerState(status=self.status))  # type: ignore[arg-type]

    def pause_task(self, task_id: str) -> None:
        self.calls.append(f"pause {task_id[:1]}")

    def resume_task(self, task_id: str) -> None:
        self.calls.append(f"resume {task_id[:1]}")

    # tools
    def commit(self, req: graph_pb2.CommitContainerRequest) -> types_pb2.Image:
        self.calls.append(f"commit {req.container[:1]}")
        if self.fail:
            raise errors.InvalidArgument("bad change")
        return types_pb2.Image(id="sha256:" + "1" * 64)


def _commit(rec: Recorder, **kw: object) -> list[str]:
    servicer = ImageToolServicer(rec, rec, rec)  # type: ignore[arg-type]
    servicer._commit(api_pb2.CommitContainerRequest(container="web", **kw))  # type: ignore[arg-type]
    return rec.calls


def test_running_container_is_paused_during_commit_and_resumed() -> None:
    assert _commit(Recorder(types_pb2.CONTAINER_STATUS_RUNNING)) == ["pause c", "commit c", "resume c"]


def test_no_pause_commits_as_is() -> None:
    assert _commit(Recorder(types_pb2.CONTAINER_STATUS_RUNNING), no_pause=True) == ["commit w"]


@pytest.mark.parametrize("status", [types_pb2.CONTAINER_STATUS_PAUSED, types_pb2.CONTAINER_STATUS_EXITED, None])
def test_not_running_is_left_as_it_is(status: int | None) -> None:
    assert _commit(Recorder(status)) == ["commit w"]


def test_resumed_even_when_the_commit_fails() -> None:
    rec = Recorder(types_pb2.CONTAINER_STATUS_RUNNING, fail=True)
    with pytest.raises(errors.InvalidArgument):
        _commit(rec)
    assert rec.calls == ["pause c", "commit c", "resume c"]
