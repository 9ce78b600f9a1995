"""Streams from execsvc resumed after a lost connection: nothing lost, nothing repeated."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from skiff.apiserver import resume
from skiff.apiserver.callctx import Call
from skiff.common import errors
from skiff.exec.v1 import exec_pb2
from skiff.types.v1 import types_pb2

# (time in ns, text): two entries share a timestamp, as stdout and stderr may
LOG = [(10, "a"), (20, "b"), (20, "c"), (30, "d"), (40, "e")]


def _entry(t: int, text: str) -> types_pb2.LogEntry:
    e = types_pb2.LogEntry(data=text.encode())
    e.time.seconds, e.time.nanos = divmod(t, 10**9)
    return e


class FakeExec:
    """ReadLogs/AttachExec that break (as a killed execsvc does) after ``cut`` entries, once each."""

    def __init__(self, cuts: list[int]):
        self.cuts = cuts
        self.requests: list[exec_pb2.ReadLogsRequest] = []

    def read_logs(self, req: exec_pb2.ReadLogsRequest, call: Any = None) -> Any:
        self.requests.append(req)
        since = req.since.seconds * 10**9 + req.since.nanos if req.HasField("since") else 0
        entries = [_entry(t, x) for t, x in LOG if t >= since]
        cut = self.cuts.pop(0) if self.cuts else None

        class S:
            def __iter__(self) -> Iterator[types_pb2.LogEntry]:
                for i, e in enumerate(entries):
                    if i == cut:
                        raise errors.Internal("Stream removed")
                    yield e

            def cancel(self) -> None:
                pass

            def exit_status(self) -> exec_pb2.WaitTaskResponse:
                return exec_pb2.WaitTaskResponse(exit_code=len(entries))
        return S()

    def attach_exec(self, task_id: str, exec_id: str, call: Any) -> Iterator[exec_pb2.AttachExecResponse]:
        cut = self.cuts.pop(0) if self.cuts else None
        for i, (t, x) in enumerate(LOG):
            if i == cut:
                raise errors.Unavailable("Socket closed")
            yield exec_pb2.AttachExecResponse(output=_entry(t, x))
        yield exec_pb2.AttachExecResponse(exit_code=3)


@pytest.mark.parametrize("cuts", [[], [0], [1], [2], [3], [2, 0, 1], [5]])
def test_logs_resume_without_loss_or_repeat(cuts: list[int]) -> None:
    fake = FakeExec(list(cuts))
    stream = resume.ResumingLogs(fake, exec_pb2.ReadLogsRequest(id="c"), Call(timeout=30))  # type: ignore[arg-type]
    assert [e.data.decode() for e in stream] == ["a", "b", "c", "d", "e"]
    if len(fake.requests) > 1 and cuts[0] > 0:  # resumed from the last delivered time (before: the same request again)
        assert fake.requests[1].HasField("since")


def test_other_errors_are_not_retried() -> None:
    class Broken(FakeExec):
        def read_logs(self, req: exec_pb2.ReadLogsRequest, call: Any = None) -> Any:
            raise errors.FailedPrecondition("configured logging driver does not support reading")
    with pytest.raises(errors.FailedPrecondition):
        list(resume.ResumingLogs(Broken([]), exec_pb2.ReadLogsRequest(id="c"), Call(timeout=5)))  # type: ignore[arg-type]


@pytest.mark.parametrize("cuts", [[], [0], [2], [4, 1]])
def test_exec_resumes_by_count(cuts: list[int]) -> None:
    out = list(resume.attach_exec(FakeExec(cuts), "c", "e", Call(timeout=30)))  # type: ignore[arg-type]
    assert [r.output.data.decode() for r in out[:-1]] == ["a", "b", "c", "d", "e"]
    assert out[-1].exit_code == 3


def test_retrying_gives_up_at_the_deadline() -> None:
    def down() -> None:
        raise errors.Unavailable("down")
    with pytest.raises(errors.DeadlineExceeded):
        resume.retrying(down, None, time.monotonic() + 0.3)


@pytest.mark.parametrize("cuts", [[], [2]])
def test_the_exit_status_comes_from_the_stream_that_ended(cuts: list[int]) -> None:
    """After a follow that ran to its end (resumed or not): the last stream's exit status; before
    the end, none (the caller asks WaitTask)."""
    resumed = bool(cuts)  # the fake pops its cuts
    logs = resume.ResumingLogs(FakeExec(cuts), exec_pb2.ReadLogsRequest(id="c", follow=True), Call(5))
    next(logs)
    assert logs.exit_status() is None
    rest = list(logs)
    assert len(rest) == len(LOG) - 1
    status = logs.exit_status()
    # the fake's status: how many entries its stream had (the resumed one starts at "b")
    assert status is not None and status.exit_code == (len(LOG) - 1 if resumed else len(LOG))
