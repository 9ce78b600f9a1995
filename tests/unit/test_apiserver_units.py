"""Small pure parts of the gateway: signal names, call deadlines, the container view."""

from __future__ import annotations

import signal
import time

import pytest

from skiff.apiserver.callctx import Call
from skiff.apiserver.signals import parse_signal
from skiff.apiserver.views import compile_filters, container_view
from skiff.common import errors
from skiff.exec.v1 import exec_pb2
from skiff.graph.v1 import graph_pb2
from skiff.types.v1 import types_pb2


@pytest.mark.parametrize(("text", "number"), [("", 15), ("term", 15), ("SIGKILL", 9), ("kill", 9), ("34", 34)])
def test_parse_signal(text: str, number: int) -> None:
    assert parse_signal(text, signal.SIGTERM) == number


@pytest.mark.parametrize("bad", ["0", "65", "-1", "SIGFOO", "9x"])
def test_parse_signal_rejects(bad: str) -> None:
    with pytest.raises(errors.InvalidArgument):
        parse_signal(bad, signal.SIGTERM)


def test_call_deadline_and_cancel_hooks() -> None:
    assert Call().remaining() is None and Call().remaining(3) == 3
    call = Call(0.05)
    assert call.remaining(10) <= 0.05  # type: ignore[operator]
    assert call.sleep(1) is False and call.expired()
    fired: list[int] = []
    call = Call()
    call.on_cancel(lambda: fired.append(1))
    started = time.monotonic()
    call.cancel()
    call.cancel()
    call.on_cancel(lambda: fired.append(2))  # already cancelled: runs at once
    assert fired == [1, 2] and call.cancelled and not call.sleep(5)
    assert time.monotonic() - started < 1


def test_view_without_task_is_created_and_filters_combine() -> None:
    record = graph_pb2.Container(id="ab" * 32, name="web", host_config=types_pb2.HostConfig(network_mode="none"))
    view = container_view(record, None, None)
    assert view.state.status == types_pb2.CONTAINER_STATUS_CREATED
    assert view.network_settings.network_mode == "none" and view.network_settings.sandbox_key == ""
    running = exec_pb2.Task(state=types_pb2.ContainerState(status=types_pb2.CONTAINER_STATUS_RUNNING))
    live = container_view(record, running, None)
    match = compile_filters(
        [types_pb2.Filter(key="name", value="^we"), types_pb2.Filter(key="status", value="running")]
    )
    assert match(live) and not match(view)
    assert compile_filters([types_pb2.Filter(key="id", value="abab")])(view)
    with pytest.raises(errors.InvalidArgument):
        compile_filters([types_pb2.Filter(key="name", value="(")])
