"""The json-file log reader on hand-written files."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from skiff.execsvc import logs


def _line(text: str, stream: str = "stdout", t: str = "2026-01-01T00:00:00.000000001Z") -> str:
    return json.dumps({"log": text, "stream": stream, "time": t}) + "\n"


def test_read_and_tail(tmp_path: Path) -> None:
    p = tmp_path / "c-json.log"
    p.write_text(_line("a\n") + _line("b\n", "stderr") + "not json\n" + _line("c\n"))
    assert [(e.stream, e.data) for e in logs.read(p)] == [("stdout", b"a\n"), ("stderr", b"b\n"), ("stdout", b"c\n")]
    assert [e.data for e in logs.read(p, tail=1)] == [b"c\n"]
    assert list(logs.read(p, tail=0)) == []
    assert list(logs.read(tmp_path / "missing")) == []


def test_format_entry() -> None:
    e = logs.LogEntry("stdout", b"x\n", "T")
    assert logs.format_entry(e) == b"x\n" and logs.format_entry(e, timestamps=True) == b"T x\n"


def test_follow_finishes_torn_lines_and_ends_after_exit(tmp_path: Path) -> None:
    p = tmp_path / "c-json.log"
    running = threading.Event()
    running.set()
    first = _line("one\n")
    p.write_text(first[:10])  # the writer is mid-line

    def writer() -> None:
        time.sleep(0.05)
        with open(p, "a") as f:
            f.write(first[10:] + _line("two\n"))
        time.sleep(0.05)
        with open(p, "a") as f:
            f.write(_line("three\n"))
        running.clear()  # exits after its last write: the reader must still drain it

    t = threading.Thread(target=writer)
    t.start()
    got = [e.data for e in logs.read(p, follow=True, is_running=running.is_set, poll_interval=0.01)]
    t.join()
    assert got == [b"one\n", b"two\n", b"three\n"]
