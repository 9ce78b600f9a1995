"""The lean client (cli/lean/skiff_lean.py): HPACK, HTTP/2 and protobuf by hand, checked
against the specification's examples, the generated protobuf code and a real gRPC server."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from fractions import Fraction

import grpc
import pytest

from skiff.api.v1 import api_pb2, api_pb2_grpc
from skiff.apiserver.containers import Containers
from skiff.apiserver.server import build
from skiff.cli import runopts
from skiff.cli.lean import skiff_lean as lean
from skiff.cli.main import build_parser
from skiff.types.v1 import types_pb2

from .test_apiserver_fakes import FakeExec, FakeGraph, FakeNet

# --- HPACK -----------------------------------------------------------------------------------


def test_huffman_code_is_complete_and_canonical() -> None:
    codes = lean.huffman_codes()
    assert sorted(codes) == list(range(257))
    assert sum(Fraction(1, 2 ** n) for _, n in codes.values()) == 1  # a complete prefix code
    assert codes[256] == (0x3FFFFFFF, 30)  # EOS: thirty 1 bits (RFC 7541 5.2)
    assert codes[ord("0")] == (0, 5) and codes[ord(" ")] == (0b010100, 6)


@pytest.mark.parametrize(("text", "encoded"), [
    # RFC 7541 appendix C.4.1-C.4.3
    (b"www.example.com", "f1e3c2e5f23a6ba0ab90f4ff"),
    (b"no-cache", "a8eb10649cbf"),
    (b"custom-key", "25a849e95ba97d7f"),
    (b"custom-value", "25a849e95bb8e8b4bf"),
])
def test_huffman_matches_the_rfc_examples(text: bytes, encoded: str) -> None:
    assert lean.huffman_encode(text) == bytes.fromhex(encoded)
    assert lean.huffman_decode(bytes.fromhex(encoded)) == text


def test_huffman_round_trip_of_every_byte() -> None:
    data = bytes(range(256)) * 2
    assert lean.huffman_decode(lean.huffman_encode(data)) == data


def test_huffman_rejects_bad_padding() -> None:
    with pytest.raises(ValueError):
        lean.huffman_decode(lean.huffman_encode(b"a")[:-1] + b"\x00")  # padding must be 1 bits


def test_hpack_rfc_request_examples_with_the_dynamic_table() -> None:
    """RFC 7541 C.3: three requests on one connection, without Huffman."""
    d = lean.Decoder()
    first = bytes.fromhex("828684410f7777772e6578616d706c652e636f6d")
    assert d.decode(first) == [(":method", "GET"), (":scheme", "http"), (":path", "/"),
                               (":authority", "www.example.com")]
    second = bytes.fromhex("828684be58086e6f2d6361636865")
    assert d.decode(second)[-2:] == [(":authority", "www.example.com"), ("cache-control", "no-cache")]
    third = bytes.fromhex("828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565")
    assert d.decode(third) == [(":method", "GET"), (":scheme", "https"), (":path", "/index.html"),
                               (":authority", "www.example.com"), ("custom-key", "custom-value")]
    assert d.size == 164  # as in the RFC


def test_our_header_encoding_decodes_back() -> None:
    headers = [(":method", "POST"), (":path", "/x/Y"), ("te", "trailers"), ("grpc-timeout", "60S")]
    assert lean.Decoder().decode(lean.encode_headers(headers)) == headers


# --- protobuf: byte for byte what the full CLI sends ---------------------------------------


@pytest.mark.parametrize("argv", [
    ["busybox", "true"],
    ["--rm", "--network", "none", "busybox", "true"],
    ["--rm", "--network=none", "--name", "web", "busybox", "sh", "-c", "echo hi; exit 3"],
    ["-d", "--name=x", "busybox"],
    ["--net", "host", "busybox", "echo", "", "é"],
])
def test_create_request_matches_the_generated_code(argv: list[str]) -> None:
    opts = lean.parse(["run", *argv], {})
    assert opts is not None
    args = build_parser().parse_args(["run", *argv])
    full = runopts.build_request(args, {}).SerializeToString()
    assert lean.create_request(opts) == full


def test_create_request_of_create_matches_the_generated_code() -> None:
    argv = ["create", "--rm", "--name", "c1", "--network", "none", "busybox", "sleep", "1"]
    opts = lean.parse(argv, {})
    assert opts is not None and opts["verb"] == "create"
    assert lean.create_request(opts) == runopts.build_request(build_parser().parse_args(argv), {}).SerializeToString()


@pytest.mark.parametrize(("argv", "verb", "refs", "force"), [
    (["start", "c1"], "start", ["c1"], False),
    (["wait", "a", "b"], "wait", ["a", "b"], False),
    (["rm", "-f", "c1"], "rm", ["c1"], True),
    (["rm", "c1"], "rm", ["c1"], False),
    (["rm", "-f", "a", "b"], "rm", ["a", "b"], True),
])
def test_reference_commands(argv: list[str], verb: str, refs: list[str], force: bool) -> None:
    assert lean.parse(argv, {}) == {"verb": verb, "host": "/run/skiff/skiff.sock", "containers": refs,
                                    "force": force}


@pytest.mark.parametrize("argv", [
    ["ps", "-s"], ["ps", "--filter", "name=a"], ["ps", "-aqs"], ["ps", "-n", "3"], ["ps", "--format", "x"],
    ["run", "-it", "busybox", "sh"], ["create", "-d", "busybox"], ["start", "a", "b"], ["start", "-a", "a"],
    ["rm", "-v", "a"], ["rm", "a", "-f"], ["wait"], ["run", "-e", "A=1", "busybox"], ["--debug", "run", "busybox"],
    ["-H", "tcp://1.2.3.4:2376", "run", "busybox"], ["run"], ["run", "--rm"], ["run", "--name", "", "busybox"],
])
def test_everything_else_goes_to_the_full_cli(argv: list[str]) -> None:
    assert lean.parse(argv, {}) is None


@pytest.mark.parametrize(("argv", "flags"), [
    (["ps"], (False, False, False)),
    (["ps", "-a"], (True, False, False)),
    (["ps", "-aq", "--no-trunc"], (True, True, True)),
    (["ps", "-qa"], (True, True, False)),
    (["ps", "--all", "--quiet"], (True, True, False)),
])
def test_ps_flags(argv: list[str], flags: tuple[bool, bool, bool]) -> None:
    opts = lean.parse(argv, {})
    assert opts is not None and (opts["all"], opts["quiet"], opts["no_trunc"]) == flags


def test_trace_requests_go_to_the_full_cli() -> None:
    assert lean.parse(["run", "busybox"], {"SKIFF_TRACE": "1"}) is None


def test_host_from_flag_and_environment() -> None:
    assert lean.parse(["-H", "unix:///a.sock", "run", "busybox"], {})["host"] == "/a.sock"  # type: ignore[index]
    assert lean.parse(["run", "busybox"], {"SKIFF_HOST": "unix:///b.sock"})["host"] == "/b.sock"  # type: ignore[index]


def test_protobuf_parse_of_generated_messages() -> None:
    msg = api_pb2.WaitContainerResponse(exit_code=-1, error="boom").SerializeToString()
    fields = lean.pb_parse(msg)
    assert lean._int32(fields[1][0]) == -1 and fields[2][0] == b"boom"


# --- HTTP/2 against a real gRPC server (the gateway, over fake backends) --------------------


@pytest.fixture
def gateway() -> Iterator[tuple[str, FakeExec, grpc.Channel]]:
    graph, exec_, net = FakeGraph(), FakeExec(), FakeNet()
    containers = Containers(graph, exec_, net, poll_interval=0.02, watch_interval=0.2)
    with tempfile.TemporaryDirectory(prefix="skiff-lean-") as tmp:
        sock = f"{tmp}/api.sock"
        gw = build([f"unix://{sock}"], graph, exec_, net, containers=containers)
        gw.service.start()
        ch = grpc.insecure_channel(f"unix://{sock}")
        try:
            yield sock, exec_, ch
        finally:
            ch.close()
            containers.close()
            gw.service.stop(0)


def test_unary_calls_and_errors_with_their_reason(gateway: tuple[str, FakeExec, grpc.Channel]) -> None:
    sock, _, ch = gateway
    conn = lean.Connection(sock)
    try:
        opts = lean.parse(["run", "--network", "none", "busybox", "true"], {})
        assert opts is not None
        cid = lean.pb_parse(conn.unary("CreateContainer", lean.create_request(opts)))[1][0]
        seen = api_pb2_grpc.ContainerServiceStub(ch).InspectContainer(
            api_pb2.InspectContainerRequest(container=bytes(cid).decode()), timeout=5).container
        assert seen.host_config.network_mode == "none" and list(seen.config.cmd.values) == ["true"]
        # An error: status, message and the ErrorInfo reason (base64 + Huffman in the trailers).
        for _ in range(3):  # repeated: the dynamic table is reused by the server
            with pytest.raises(lean.RpcError) as info:
                conn.unary("StartContainer", lean.pb_str(1, "no-such-container"))
            assert info.value.status == grpc.StatusCode.NOT_FOUND.value[0]
            assert info.value.reason == "CONTAINER_NOT_FOUND"
            assert "no-such-container" in info.value.message
        with pytest.raises(grpc.RpcError) as full:
            api_pb2_grpc.ContainerServiceStub(ch).StartContainer(
                api_pb2.StartContainerRequest(container="no-such-container"), timeout=5)
        assert full.value.details() == info.value.message
    finally:
        conn.close()


def test_attached_run_streams_output_and_exit(gateway: tuple[str, FakeExec, grpc.Channel],
                                              capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    sock, exec_, _ = gateway
    conn = lean.Connection(sock)
    opts = lean.parse(["run", "busybox", "x"], {})
    assert opts is not None
    import threading

    def container() -> None:  # the fake task: output on both streams, then exit 7
        for _ in range(500):
            tasks = list(exec_.tasks)
            if tasks and exec_.running(tasks[0]):
                exec_.emit(tasks[0], b"out\n")
                exec_.emit(tasks[0], b"err\n", stream=2)
                exec_.emit(tasks[0], b"x" * 100_000 + b"\n")  # more than one frame and window
                with exec_.cond:
                    exec_._exit(tasks[0], 7)
                return
            threading.Event().wait(0.01)

    t = threading.Thread(target=container)
    t.start()
    try:
        assert lean.run(opts, conn) == 7
    finally:
        t.join(10)
        conn.close()
    out, err = capfdbinary.readouterr()
    assert out == b"out\n" + b"x" * 100_000 + b"\n" and err == b"err\n"


@pytest.mark.parametrize("rm", [True, False])
def test_attach_request_matches_the_generated_code(rm: bool) -> None:
    from skiff.cli import attach

    cid = "c" * 64
    full = next(attach.attach_options(cid, await_start=True, start=True, await_removed=rm))
    assert lean.attach_request(cid, rm) == full.SerializeToString()


def _run(sock: str, argv: list[str]) -> int | None:
    """lean.run, bounded: a client waiting for a start that never comes has its connection cut
    after 30 s (and fails the test)."""
    import socket
    import threading

    conn = lean.Connection(sock)
    watchdog = threading.Timer(30, lambda: conn.sock.shutdown(socket.SHUT_RDWR))
    watchdog.start()
    try:
        opts = lean.parse(argv, {})
        assert opts is not None
        return lean.run(opts, conn)
    finally:
        watchdog.cancel()
        conn.close()


def test_run_rm_is_two_calls_and_gone_when_it_returns(gateway: tuple[str, FakeExec, grpc.Channel],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    sock, _, ch = gateway
    seen: list[str] = []
    real = lean.Connection.call

    def call(self: lean.Connection, method: str, *args: object, **kwargs: object) -> lean.Stream:
        seen.append(method)
        return real(self, method, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(lean.Connection, "call", call)
    assert _run(sock, ["run", "--rm", "--name", "twice", "busybox", "exit", "5"]) == 5
    assert seen == ["CreateContainer", "AttachContainer"]
    listed = api_pb2_grpc.ContainerServiceStub(ch).ListContainers(api_pb2.ListContainersRequest(all=True), timeout=5)
    assert not listed.containers  # gone, and its name free:
    assert _run(sock, ["run", "--rm", "--name", "twice", "busybox", "exit", "0"]) == 0


def test_run_rm_on_a_gateway_without_attach_start(gateway: tuple[str, FakeExec, grpc.Channel],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A gateway that does not know options.start/await_removed: the client starts the container
    and waits for its removal itself, as before."""
    sock, _, ch = gateway
    real = Containers.attach

    def old_attach(self: Containers, requests: Iterator[api_pb2.AttachContainerRequest], *args: object
                   ) -> Iterator[api_pb2.AttachContainerResponse]:
        first = next(requests)
        first.options.ClearField("start")
        first.options.ClearField("await_removed")
        return real(self, iter([first, *requests]), *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Containers, "attach", old_attach)
    assert _run(sock, ["run", "--rm", "busybox", "exit", "4"]) == 4
    listed = api_pb2_grpc.ContainerServiceStub(ch).ListContainers(api_pb2.ListContainersRequest(all=True), timeout=5)
    assert not listed.containers


def test_run_whose_start_fails(gateway: tuple[str, FakeExec, grpc.Channel],
                               capfd: pytest.CaptureFixture[str]) -> None:
    sock, _, ch = gateway
    assert _run(sock, ["run", "--rm", "busybox", "missing"]) == 127
    assert "executable file not found" in capfd.readouterr().err
    listed = api_pb2_grpc.ContainerServiceStub(ch).ListContainers(api_pb2.ListContainersRequest(all=True), timeout=5)
    assert not listed.containers  # --rm: removed


def test_nothing_listening_means_the_full_cli_explains() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        assert lean.main(["-H", f"unix://{os.path.join(tmp, 'none.sock')}", "run", "busybox"], {}) is None


def test_rm_of_many_in_a_few_calls_each_result_in_order(gateway: tuple[str, FakeExec, grpc.Channel],
                                                        capfd: pytest.CaptureFixture[str]) -> None:
    sock, exec_, ch = gateway
    api = api_pb2_grpc.ContainerServiceStub(ch)
    config = types_pb2.ContainerConfig(image="busybox")
    config.cmd.values.append("sleep")

    def create() -> str:
        return str(api.CreateContainer(api_pb2.CreateContainerRequest(config=config), timeout=5).id)

    ids = [create() for _ in range(400)]  # 400 full ids: more than one request's worth
    running = create()
    api.StartContainer(api_pb2.StartContainerRequest(container=running), timeout=5)
    argv = ["-H", f"unix://{sock}", "rm", *ids[:200], "nosuch", running, *ids[200:]]
    assert lean.main(argv, {}) == 1
    out, err = capfd.readouterr()
    assert out.split() == ids
    assert err.splitlines() == [
        "Error response from daemon: No such container: nosuch",
        f"Error response from daemon: You cannot remove a running container {running}. "
        "Stop the container before attempting removal or force remove",
    ]
    left = api.ListContainers(api_pb2.ListContainersRequest(all=True), timeout=5).containers
    assert [c.id for c in left] == [running]
    assert lean.main(["-H", f"unix://{sock}", "rm", "-f", running, "nosuch"], {}) == 1
    out, err = capfd.readouterr()
    assert (out, err) == (f"{running}\n", "Error response from daemon: No such container: nosuch\n")
    assert not exec_.tasks
