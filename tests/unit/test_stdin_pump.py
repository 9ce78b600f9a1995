"""The gateway's stdin pump opens AttachStdin again when execsvc goes away under it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import grpc

from skiff.api.v1 import api_pb2
from skiff.apiserver import stdio
from skiff.exec.v1 import exec_pb2


class _Lost(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "Socket closed"


class _Stream:
    """An upstream call: a thread pulls requests as gRPC's sender does, until ``fail()``."""

    def __init__(self, requests: Iterator[exec_pb2.AttachStdinRequest]):
        self.got: list[exec_pb2.AttachStdinRequest] = []
        self.dropped: list[exec_pb2.AttachStdinRequest] = []
        self._callbacks: list[Callable[[_Stream], None]] = []
        self._failed = threading.Event()
        self._cancelled = False
        self.ended = threading.Event()
        threading.Thread(target=self._pull, args=(requests,), daemon=True).start()

    def _pull(self, requests: Iterator[exec_pb2.AttachStdinRequest]) -> None:
        for req in requests:
            if self._failed.is_set():
                self.dropped.append(req)  # taken from the iterator, never sent
                return
            self.got.append(req)
        self.ended.set()

    def fail(self) -> None:
        self._failed.set()
        for cb in self._callbacks:
            cb(self)

    def add_done_callback(self, cb: Callable[[_Stream], None]) -> None:
        self._callbacks.append(cb)

    def cancel(self) -> bool:
        self._cancelled = True
        return True

    def cancelled(self) -> bool:
        return self._cancelled

    def exception(self) -> BaseException | None:
        return _Lost() if self._failed.is_set() else None


def _until(cond: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not cond():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_stdin_reconnects_and_resends_the_item_in_flight() -> None:
    streams: list[_Stream] = []
    client: list[api_pb2.AttachContainerRequest | None] = []
    more = threading.Condition()

    def requests() -> Iterator[api_pb2.AttachContainerRequest]:
        sent = 0
        while True:
            with more:
                more.wait_for(lambda n=sent: len(client) > n)
            item = client[sent]
            sent += 1
            if item is None:
                return
            yield item

    def type_(data: bytes | None) -> None:
        with more:
            client.append(None if data is None else api_pb2.AttachContainerRequest(stdin=data))
            more.notify_all()

    def open_upstream(reqs: Iterator[exec_pb2.AttachStdinRequest]) -> _Stream:
        streams.append(_Stream(reqs))
        return streams[-1]

    target = exec_pb2.StdinTarget(task_id="t", close_on_eof=True)
    pump = stdio.Pump(requests(), target, b"\x10\x11", open_upstream, lambda: None)
    pump.start()
    type_(b"one")
    _until(lambda: len(streams[0].got) == 2)
    streams[0].fail()  # execsvc killed: the next item is pulled but never sent
    type_(b"two")
    _until(lambda: len(streams) == 2 and len(streams[1].got) >= 2)
    type_(b"three")
    type_(None)  # the client's EOF ends the new stream normally
    assert streams[1].ended.wait(10)
    data = [r.data for r in streams[1].got if r.WhichOneof("part") == "data"]
    assert streams[1].got[0].target == target
    assert data == [b"two", b"three"]
    assert [r.data for r in streams[0].got[1:]] == [b"one"]
    pump.stop()


def test_no_reconnect_after_a_stop() -> None:
    streams: list[_Stream] = []

    def open_upstream(reqs: Iterator[exec_pb2.AttachStdinRequest]) -> _Stream:
        streams.append(_Stream(reqs))
        return streams[-1]

    block = threading.Event()

    def requests() -> Iterator[api_pb2.AttachContainerRequest]:
        block.wait(10)
        yield from ()

    pump = stdio.Pump(requests(), exec_pb2.StdinTarget(task_id="t"), b"\x10\x11", open_upstream, lambda: None)
    pump.start()
    pump.stop()
    streams[0].fail()
    time.sleep(0.3)
    block.set()
    assert len(streams) == 1 and streams[0].cancelled()
