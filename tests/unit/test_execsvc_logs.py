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


def _rotate(p: Path, keep: int) -> None:
    """What the shim does: <log>.<keep-2> -> <log>.<keep-1>, ..., <log> -> <log>.1, new <log>."""
    for i in range(keep - 1, 0, -1):
        src = p if i == 1 else p.with_name(f"{p.name}.{i - 1}")
        if src.exists():
            src.rename(p.with_name(f"{p.name}.{i}"))
    p.write_text("")


def test_read_across_rotated_files_oldest_first(tmp_path: Path) -> None:
    p = tmp_path / "c-json.log"
    p.write_text(_line("1\n"))
    _rotate(p, 3)
    with open(p, "a") as f:
        f.write(_line("2\n"))
    _rotate(p, 3)
    with open(p, "a") as f:
        f.write(_line("3\n"))
    assert sorted(x.name for x in tmp_path.iterdir()) == ["c-json.log", "c-json.log.1", "c-json.log.2"]
    assert [e.data for e in logs.read(p)] == [b"1\n", b"2\n", b"3\n"]
    assert [e.data for e in logs.read(p, tail=2)] == [b"2\n", b"3\n"]


def test_follow_carries_on_after_rotation_and_truncation(tmp_path: Path) -> None:
    p = tmp_path / "c-json.log"
    p.write_text(_line("0\n"))
    running = threading.Event()
    running.set()
    got: list[bytes] = []

    def follow() -> None:
        for e in logs.read(p, follow=True, is_running=running.is_set, poll_interval=0.01):
            got.append(e.data)

    t = threading.Thread(target=follow)
    t.start()
    try:
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        with open(p, "a") as f:
            f.write(_line("1\n"))  # written just before the rotation: must not be lost
        _rotate(p, 2)
        with open(p, "a") as f:
            f.write(_line("2\n"))
        _rotate(p, 2)  # twice before the reader looks again is fine as long as the file survives
        with open(p, "a") as f:
            f.write(_line("3\n"))
        while len(got) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        running.clear()
        t.join(timeout=10)
    assert got == [b"0\n", b"1\n", b"2\n", b"3\n"]
    assert not t.is_alive()


def test_follow_ends_when_until_has_passed(tmp_path: Path) -> None:
    p = tmp_path / "c-json.log"
    p.write_text(_line("0\n"))
    out = list(logs.read(p, follow=True, is_running=lambda: True, until_ns=time.time_ns() - 1, poll_interval=0.01))
    assert [e.data for e in out] == [b"0\n"]


def test_compressed_rotations_are_read_and_a_plain_file_being_gzipped_wins(tmp_path: Path) -> None:
    import gzip

    p = tmp_path / "c-json.log"
    (tmp_path / "c-json.log.2.gz").write_bytes(gzip.compress(_line("old\n").encode()))
    (tmp_path / "c-json.log.1").write_text(_line("mid\n"))
    (tmp_path / "c-json.log.1.gz").write_bytes(b"\x1f\x8b half an archive")  # gzip still writing it
    p.write_text(_line("new\n"))
    assert [q.name for q in logs.rotated(p)] == ["c-json.log.1", "c-json.log.2.gz"]
    assert [e.data for e in logs.read(p)] == [b"old\n", b"mid\n", b"new\n"]
    # gzip finished between the listing and the open: the archive is read instead
    (tmp_path / "c-json.log.1.gz").write_bytes(gzip.compress(_line("mid\n").encode()))
    (tmp_path / "c-json.log.1").unlink()
    assert logs.open_log(tmp_path / "c-json.log.1").read() == _line("mid\n").encode()
    assert [e.data for e in logs.read(p, tail=2)] == [b"mid\n", b"new\n"]
