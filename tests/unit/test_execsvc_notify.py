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
