"""The services' thread pool: idle threads go away, calls are never lost, exceptions reach the caller."""

from __future__ import annotations

import threading
import time

import pytest

from skiff.common import memory


def _until(cond, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_burst_runs_everything_then_idle_threads_leave_and_the_heap_is_trimmed() -> None:
    trims: list[int] = []
    pool = memory.ElasticThreadPool(4, "t", idle_timeout=0.2, on_idle=lambda: trims.append(1))
    running, peak, lock, gate = [0], [0], threading.Lock(), threading.Event()

    def task(i: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        gate.wait(30)
        with lock:
            running[0] -= 1
        return i * 2

    futures = [pool.submit(task, i) for i in range(20)]
    assert _until(lambda: running[0] == 4)
    time.sleep(0.2)
    assert peak[0] == 4 and len(pool) == 4  # bounded by max_workers; the rest queued
    gate.set()
    assert [f.result(timeout=30) for f in futures] == [i * 2 for i in range(20)]
    assert _until(lambda: len(pool) == 0)
    assert trims  # the heap was trimmed when they left
    assert pool.submit(sum, [1, 2]).result(timeout=10) == 3  # and a new call starts a thread again
    pool.shutdown()


def test_a_trickle_lets_the_burst_threads_go() -> None:
    pool = memory.ElasticThreadPool(8, "t", idle_timeout=0.5)
    gate = threading.Event()
    burst = [pool.submit(gate.wait, 30) for _ in range(8)]
    assert _until(lambda: len(pool) == 8)
    gate.set()
    for f in burst:
        f.result(timeout=10)
    end = time.monotonic() + 2.0  # a call every ~20 ms for 2 s: the most recently idle thread takes it
    while time.monotonic() < end:
        pool.submit(time.sleep, 0.001).result(timeout=10)
        time.sleep(0.02)
    assert len(pool) < 8  # most were idle past the timeout (round-robin reuse would keep all eight)
    pool.shutdown()


def test_exceptions_and_shutdown() -> None:
    pool = memory.ElasticThreadPool(2, "t", idle_timeout=60)
    with pytest.raises(ZeroDivisionError):
        pool.submit(lambda: 1 / 0).result(timeout=10)
    slow = pool.submit(time.sleep, 0.2)
    pool.shutdown(wait=True)  # waits for the busy one, wakes the idle one
    assert slow.done() and len(pool) == 0
    with pytest.raises(RuntimeError):
        pool.submit(sum, [])


def test_cancel_futures_drops_the_queued_calls() -> None:
    pool = memory.ElasticThreadPool(1, "t")
    gate = threading.Event()
    first = pool.submit(gate.wait, 10)
    queued = pool.submit(sum, [1])
    pool.shutdown(wait=False, cancel_futures=True)
    gate.set()
    assert first.result(timeout=10) is True
    assert queued.cancelled()
