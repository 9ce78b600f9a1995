"""Interactive I/O without root: detach keys (Docker's format), the monitor's frames, the CLI flags."""

from __future__ import annotations

import struct

import pytest

from skiff.cli import exits
from skiff.cli.main import build_parser
from skiff.cli.runopts import build_request
from skiff.common import detachkeys
from skiff.exec.v1 import exec_pb2
from skiff.execsvc import stdio
from skiff.execsvc.spec import ContainerSpec, RootfsMount, build_config, shim_conf
from skiff.types.v1 import types_pb2


def test_detach_keys_parse_like_docker() -> None:
    assert detachkeys.parse("") == b"\x10\x11"  # ctrl-p,ctrl-q
    assert detachkeys.parse("ctrl-a,x") == b"\x01x"
    assert detachkeys.parse("ctrl-@,ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_") == bytes([0, 27, 28, 29, 30, 31])
    assert detachkeys.parse("a,b,c") == b"abc"
    for bad in ("ctrl-1", "ctrl-", "ctrl-aa", "ab", "ctrl-A,", "é"):
        with pytest.raises(ValueError, match=r"Invalid detach keys"):
            detachkeys.parse(bad)


def test_matcher_holds_back_a_prefix_and_finds_the_sequence_across_pieces() -> None:
    m = detachkeys.Matcher(b"\x10\x11")
    assert m.feed(b"ab\x10") == (b"ab", False)  # ctrl-p held: it may start the sequence
    assert m.feed(b"c") == (b"\x10c", False)  # it did not
    assert m.feed(b"\x10\x10") == (b"\x10", False)  # the second ctrl-p may start it anew
    assert m.feed(b"\x11rest") == (b"", True)
    m = detachkeys.Matcher(b"\x10\x11")
    assert m.feed(b"x\x10") == (b"x", False)
    assert m.flush() == b"\x10"  # at EOF, what was held goes on
    assert detachkeys.Matcher(b"").feed(b"\x10\x11") == (b"\x10\x11", False)


def test_frames_for_the_monitor() -> None:
    assert stdio.frames(exec_pb2.AttachStdinRequest(data=b"hi")) == b"d\x00\x00\x00\x02hi"
    big = stdio.frames(exec_pb2.AttachStdinRequest(data=b"x" * 5000))
    assert big[:5] == b"d" + struct.pack(">I", 4096) and big[4101:4106] == b"d" + struct.pack(">I", 904)
    assert len(big) == 5000 + 10
    size = exec_pb2.AttachStdinRequest(resize=types_pb2.TerminalSize(rows=40, cols=132))
    assert stdio.frames(size) == b"w\x00\x00\x00\x04" + struct.pack(">HH", 40, 132)
    assert stdio.EOF_FRAME == b"e\x00\x00\x00\x00"


def test_spec_asks_the_shim_and_the_init_for_a_terminal(tmp_path) -> None:  # type: ignore[no-untyped-def]
    spec = ContainerSpec(id="c1", args=("sh",), rootfs=RootfsMount("bind", "/x"), terminal=True, open_stdin=True)
    conf = shim_conf(spec, tmp_path, None).splitlines()
    assert "tty=1" in conf and "stdin=1" in conf
    cfg = build_config(spec, tmp_path, [], "/skiff/c1")
    assert cfg["process"]["terminal"] is True and "TERM=xterm" in cfg["process"]["env"]
    plain = ContainerSpec(id="c1", args=("sh",), rootfs=RootfsMount("bind", "/x"))
    assert not {"tty=1", "stdin=1"} & set(shim_conf(plain, tmp_path, None).splitlines())
    assert build_config(plain, tmp_path, [], "/skiff/c1")["process"]["terminal"] is False


def test_cli_interactive_flags() -> None:
    args = build_parser().parse_args(["run", "-it", "--detach-keys", "ctrl-a,x", "busybox", "sh"])
    assert (args.interactive, args.tty, args.detach_keys) == (True, True, "ctrl-a,x")
    req = build_request(args, {})
    assert (req.config.tty, req.config.open_stdin, req.config.stdin_once) == (True, True, True)
    detached = build_request(build_parser().parse_args(["run", "-d", "-i", "busybox", "cat"]), {})
    assert (detached.config.open_stdin, detached.config.stdin_once) == (True, False)
    created = build_request(build_parser().parse_args(["create", "-i", "busybox", "cat"]), {})
    assert (created.config.open_stdin, created.config.stdin_once) == (True, False)
    with pytest.raises(exits.Usage, match="Invalid detach keys"):
        build_parser().parse_args(["run", "--detach-keys", "ctrl-", "busybox"])
    a = build_parser().parse_args(["attach", "--no-stdin", "--sig-proxy=false", "--detach-keys", "x", "web"])
    assert (a.no_stdin, a.sig_proxy, a.detach_keys, a.container) == (True, False, "x", "web")
    s = build_parser().parse_args(["start", "-a", "-i", "web"])
    assert (s.attach, s.interactive) == (True, True)
    e = build_parser().parse_args(["exec", "-it", "--detach-keys", "ctrl-x,y", "web", "sh"])
    assert (e.interactive, e.tty, e.detach_keys, e.command) == (True, True, "ctrl-x,y", ["sh"])


def test_it_needs_a_terminal_on_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    from skiff.cli import interactive

    monkeypatch.setattr(interactive.os, "isatty", lambda fd: False)
    with pytest.raises(exits.CLIError, match="the input device is not a TTY") as e:
        interactive.check_tty(True, True)
    assert e.value.code == exits.FAILED
    interactive.check_tty(False, True)  # -t alone: no terminal needed
    interactive.check_tty(True, False)


def test_input_sends_options_then_the_size_then_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from skiff.api.v1 import api_pb2
    from skiff.cli import interactive

    r, w = os.pipe()
    os.write(w, b"typed")
    os.close(w)
    monkeypatch.setattr(interactive, "terminal_size", lambda: (50, 132))
    monkeypatch.setattr(interactive.sys, "stdin", os.fdopen(r, "rb"))
    first = api_pb2.ExecContainerRequest(options=api_pb2.ExecOptions(container="c"))
    inp = interactive.Input(first, api_pb2.ExecContainerRequest, stdin=True, tty=True)
    sent = list(inp.requests())  # ends at our EOF: the half-close that closes the process's stdin
    assert [m.WhichOneof("part") for m in sent] == ["options", "resize", "stdin"]
    assert (sent[1].resize.rows, sent[1].resize.cols, sent[2].stdin) == (50, 132, b"typed")
