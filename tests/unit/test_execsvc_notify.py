"""execsvc's event-driven waits: inotify on a directory, pidfd of a process."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

from skiff.execsvc.notify import Waiter


def test_waiter_wakes_on_a_write_in_the_directory(tmp_path: Path) -> None:
    waiter = Waiter(tmp_path)
    try:
        assert waiter.wait(0.01) is False  # nothing happened
        threading.Timer(0.05, lambda: (tmp_path / "log").write_text("x")).start()
        assert waiter.wait(60) is True
    finally:
        waiter.close()


def test_waiter_wakes_when_the_process_exits(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "60"])
    waiter = Waiter(tmp_path, proc.pid)
    try:
        assert waiter.wait(0.01) is False
        proc.kill()
        assert waiter.wait(60) is True
    finally:
        proc.wait()
        waiter.close()
    assert os.path.isdir(tmp_path)


def test_close_gives_back_every_descriptor(tmp_path: Path) -> None:
    """The inotify instance is closed by a background thread (its close waits for the kernel):
    it must still be closed, soon, and the pidfd at once."""
    proc = subprocess.Popen(["sleep", "60"])
    try:
        before = set(os.listdir("/proc/self/fd"))
        waiter = Waiter(tmp_path, proc.pid)
        opened = set(os.listdir("/proc/self/fd")) - before
        assert len(opened) == 2  # inotify + pidfd
        waiter.close()
        waiter.close()  # twice is harmless
        for _ in range(600):  # bounded: up to 60 s on a loaded machine
            if not opened & set(os.listdir("/proc/self/fd")):
                break
            threading.Event().wait(0.1)
        assert not opened & set(os.listdir("/proc/self/fd"))
    finally:
        proc.kill()
        proc.wait()
