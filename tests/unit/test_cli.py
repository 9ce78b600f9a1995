"""The CLI against a real gRPC server on a unix socket, serving a small fake engine.

The fake implements the three public services with just enough behaviour to
check what the CLI sends (requests are recorded) and how it prints what it
gets back, including errors carried as ErrorInfo reasons.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from skiff.api.v1 import api_pb2, api_pb2_grpc
from skiff.cli import main as cli_main
from skiff.common import errors
from skiff.common.grpcerr import abort
from skiff.types.v1 import types_pb2

ROOT = Path(__file__).resolve().parents[2]
ID_A = "a" * 64
ID_B = "b" * 64
IMG_ID = "sha256:" + "c" * 64


def ts(seconds_ago: float) -> Timestamp:
    t = Timestamp()
    t.FromNanoseconds(int((time.time() - seconds_ago) * 1e9))
    return t


def out(data: bytes, stream: int = types_pb2.LOG_STREAM_STDOUT) -> types_pb2.LogEntry:
    return types_pb2.LogEntry(stream=stream, data=data, time=Timestamp(seconds=1700000000, nanos=5))


class FakeEngine(api_pb2_grpc.SystemServiceServicer, api_pb2_grpc.ImageServiceServicer,
                 api_pb2_grpc.ContainerServiceServicer):
    """Programs are the container's cmd: ``emit out:x err:y exit:3``, ``sleepy``, ``nope``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.containers: dict[str, api_pb2.Container] = {}
        self.import_requests: list[api_pb2.ImportImageRequest] = []
        self.killed = threading.Event()
        self.attached = threading.Event()
        self.started = threading.Event()
        self.kill_signal = ""
        #: RemoveContainers answers (else UNIMPLEMENTED, as an older gateway)
        self.batch_rm = False

    def _record(self, name: str, request: Any) -> None:
        self.calls.append((name, request))

    def called(self, name: str) -> list[Any]:
        return [req for n, req in self.calls if n == name]

    def _find(self, ref: str, context: grpc.ServicerContext) -> api_pb2.Container:
        for c in self.containers.values():
            if ref in (c.id, c.name) or (len(ref) >= 3 and c.id.startswith(ref)):
                return c
        abort(context, errors.NotFound(f"No such container: {ref}", reason=errors.CONTAINER_NOT_FOUND))

    # SystemService
    def GetVersion(self, request: Any, context: grpc.ServicerContext) -> api_pb2.GetVersionResponse:
        return api_pb2.GetVersionResponse(version="0.1.0", api_version="v1", os="linux", arch="amd64",
                                          kernel_version="6.1.0", runtime_version="3.11.4")

    def GetInfo(self, request: Any, context: grpc.ServicerContext) -> api_pb2.GetInfoResponse:
        return api_pb2.GetInfoResponse(containers=3, containers_running=1, containers_stopped=2, images=1,
                                       storage_driver="overlay", cgroup_version="v2", cpus=2,
                                       memory_bytes=2087354368, name="host", data_root="/var/lib/skiff")

    # ImageService
    def ImportImage(self, request_iterator: Iterator[api_pb2.ImportImageRequest],
                    context: grpc.ServicerContext) -> api_pb2.ImportImageResponse:
        self.import_requests = list(request_iterator)
        return api_pb2.ImportImageResponse(image=types_pb2.Image(id=IMG_ID))

    def ListImages(self, request: api_pb2.ListImagesRequest,
                   context: grpc.ServicerContext) -> api_pb2.ListImagesResponse:
        self._record("ListImages", request)
        return api_pb2.ListImagesResponse(images=[
            types_pb2.Image(id=IMG_ID, repo_tags=["busybox:latest", "localhost:5000/bb:1"], created=ts(7200),
                          size=4261550),
            types_pb2.Image(id="sha256:" + "d" * 64, created=ts(3 * 86400), size=1234),
        ])

    def InspectImage(self, request: api_pb2.InspectImageRequest,
                     context: grpc.ServicerContext) -> api_pb2.InspectImageResponse:
        if request.image != "busybox":
            abort(context, errors.NotFound(f"No such image: {request.image}", reason=errors.IMAGE_NOT_FOUND))
        return api_pb2.InspectImageResponse(image=types_pb2.Image(id=IMG_ID, repo_tags=["busybox:latest"],
                                                                layers=["sha256:" + "e" * 64], size=10))

    def RemoveImage(self, request: api_pb2.RemoveImageRequest,
                    context: grpc.ServicerContext) -> api_pb2.RemoveImageResponse:
        if request.image != "busybox":
            abort(context, errors.NotFound(f"No such image: {request.image}", reason=errors.IMAGE_NOT_FOUND))
        return api_pb2.RemoveImageResponse(items=[types_pb2.ImageDeleteItem(untagged="busybox:latest"),
                                                  types_pb2.ImageDeleteItem(deleted=IMG_ID)])

    def PullImage(self, request: api_pb2.PullImageRequest,
                  context: grpc.ServicerContext) -> Iterator[api_pb2.PullImageResponse]:
        yield api_pb2.PullImageResponse(progress=types_pb2.Progress(id="latest", status="Pulling from library/missing"))
        abort(context, errors.NotFound(f"pull access denied for {request.reference}, repository does not exist"))

    # ContainerService
    def CreateContainer(self, request: api_pb2.CreateContainerRequest,
                        context: grpc.ServicerContext) -> api_pb2.CreateContainerResponse:
        self._record("CreateContainer", request)
        if request.config.image == "missing":
            abort(context, errors.NotFound("No such image: missing:latest", reason=errors.IMAGE_NOT_FOUND))
        if any(c.name == request.name for c in self.containers.values()):
            abort(context, errors.Conflict(f'Conflict. The container name "/{request.name}" is already in use',
                                           reason=errors.NAME_IN_USE))
        cid = f"{len(self.containers) + 1:x}" * 64
        cmd = list(request.config.cmd.values)
        self.containers[cid] = api_pb2.Container(
            id=cid, name=request.name or f"c{len(self.containers)}", image=request.config.image,
            path=cmd[0] if cmd else "sh", args=cmd[1:], config=request.config, host_config=request.host_config,
            created=ts(1), state=types_pb2.ContainerState(status=types_pb2.CONTAINER_STATUS_CREATED))
        return api_pb2.CreateContainerResponse(id=cid)

    def StartContainer(self, request: api_pb2.StartContainerRequest,
                       context: grpc.ServicerContext) -> api_pb2.StartContainerResponse:
        self._record("StartContainer", request)
        c = self._find(request.container, context)
        if c.path == "nope":
            abort(context, errors.FailedPrecondition(
                'exec: "nope": executable file not found in $PATH', reason=errors.COMMAND_NOT_FOUND))
        if c.path == "/etc":
            abort(context, errors.FailedPrecondition('exec: "/etc": permission denied',
                                                     reason=errors.COMMAND_NOT_EXECUTABLE))
        c.state.status = types_pb2.CONTAINER_STATUS_RUNNING
        self.started.set()
        return api_pb2.StartContainerResponse()

    def ListContainers(self, request: api_pb2.ListContainersRequest,
                       context: grpc.ServicerContext) -> api_pb2.ListContainersResponse:
        self._record("ListContainers", request)
        return api_pb2.ListContainersResponse(containers=list(self.containers.values()))

    def InspectContainer(self, request: api_pb2.InspectContainerRequest,
                         context: grpc.ServicerContext) -> api_pb2.InspectContainerResponse:
        return api_pb2.InspectContainerResponse(container=self._find(request.container, context))

    def StopContainer(self, request: api_pb2.StopContainerRequest,
                      context: grpc.ServicerContext) -> api_pb2.StopContainerResponse:
        self._record("StopContainer", request)
        self._find(request.container, context)
        return api_pb2.StopContainerResponse()

    def KillContainer(self, request: api_pb2.KillContainerRequest,
                      context: grpc.ServicerContext) -> api_pb2.KillContainerResponse:
        self._record("KillContainer", request)
        self._find(request.container, context)
        self.kill_signal = request.signal
        self.killed.set()
        return api_pb2.KillContainerResponse()

    def RemoveContainer(self, request: api_pb2.RemoveContainerRequest,
                        context: grpc.ServicerContext) -> api_pb2.RemoveContainerResponse:
        self._record("RemoveContainer", request)
        c = self._find(request.container, context)
        del self.containers[c.id]
        return api_pb2.RemoveContainerResponse()

    def RemoveContainers(self, request: api_pb2.RemoveContainersRequest,
                         context: grpc.ServicerContext) -> api_pb2.RemoveContainersResponse:
        if not self.batch_rm:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        self._record("RemoveContainers", request)
        results = []
        for ref in request.containers:
            found = [c for c in self.containers.values() if ref in (c.id, c.name)]
            if found:
                del self.containers[found[0].id]
                results.append(api_pb2.RemoveContainerResult(container=ref, id=found[0].id))
            else:
                results.append(api_pb2.RemoveContainerResult(container=ref, code=5, message=f"No such container: {ref}",
                                                             reason=errors.CONTAINER_NOT_FOUND))
        return api_pb2.RemoveContainersResponse(results=results)

    def WaitContainer(self, request: api_pb2.WaitContainerRequest,
                      context: grpc.ServicerContext) -> api_pb2.WaitContainerResponse:
        self._record("WaitContainer", request)
        if request.condition == api_pb2.WAIT_CONDITION_REMOVED:
            for c in list(self.containers.values()):
                if c.id == request.container and c.host_config.auto_remove:
                    del self.containers[c.id]  # the daemon's auto-remove, done
            return api_pb2.WaitContainerResponse(exit_code=0)
        c = self._find(request.container, context)
        return api_pb2.WaitContainerResponse(exit_code=c.state.exit_code)

    def ContainerLogs(self, request: api_pb2.ContainerLogsRequest,
                      context: grpc.ServicerContext) -> Iterator[api_pb2.ContainerLogsResponse]:
        self._record("ContainerLogs", request)
        self._find(request.container, context)
        yield api_pb2.ContainerLogsResponse(entry=out(b"hello\n"))
        yield api_pb2.ContainerLogsResponse(entry=out(b"oops\n", types_pb2.LOG_STREAM_STDERR))

    def AttachContainer(self, request_iterator: Iterator[api_pb2.AttachContainerRequest],
                        context: grpc.ServicerContext) -> Iterator[api_pb2.AttachContainerResponse]:
        first = next(request_iterator)
        self._record("AttachContainer", first)
        c = self._find(first.options.container, context)
        context.send_initial_metadata((("skiff-attached", "1"),))  # as the gateway: registered
        self.attached.set()
        if c.path == "sleepy":
            self.killed.wait(10)
            yield api_pb2.AttachContainerResponse(exit=api_pb2.ExitStatus(exit_code=130))
            return
        code = 0
        for word in c.args:
            kind, _, value = word.partition(":")
            if kind == "out":
                yield api_pb2.AttachContainerResponse(output=out(value.encode() + b"\n"))
            elif kind == "err":
                yield api_pb2.AttachContainerResponse(output=out(value.encode() + b"\n",
                                                                 types_pb2.LOG_STREAM_STDERR))
            elif kind == "exit":
                code = int(value)
        yield api_pb2.AttachContainerResponse(exit=api_pb2.ExitStatus(exit_code=code))


@pytest.fixture
def sockdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="skiffcli"))  # short: unix socket paths are limited to 108 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def engine(sockdir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEngine]:
    fake = FakeEngine()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    api_pb2_grpc.add_SystemServiceServicer_to_server(fake, server)
    api_pb2_grpc.add_ImageServiceServicer_to_server(fake, server)
    api_pb2_grpc.add_ContainerServiceServicer_to_server(fake, server)
    sock = sockdir / "skiff.sock"
    server.add_insecure_port(f"unix://{sock}")
    server.start()
    monkeypatch.setenv("SKIFF_HOST", f"unix://{sock}")
    yield fake
    server.stop(None)


def skiff(capsysbinary: pytest.CaptureFixture[bytes], *argv: str) -> tuple[int, str, str]:
    code = cli_main.main(list(argv))
    captured = capsysbinary.readouterr()
    return code, captured.out.decode(), captured.err.decode()


def add(engine: FakeEngine, c: api_pb2.Container) -> None:
    engine.containers[c.id] = c


# --- ps ------------------------------------------------------------------------------


def test_ps_table(engine: FakeEngine, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    add(engine, api_pb2.Container(
        id=ID_A, name="web", image="busybox", path="sh", args=["-c", "while true; do sleep 1; done"],
        created=ts(5), state=types_pb2.ContainerState(status=types_pb2.CONTAINER_STATUS_RUNNING,
                                                      started_at=ts(4))))
    add(engine, api_pb2.Container(
        id=ID_B, name="db", image=IMG_ID, path="true", created=ts(7300),
        state=types_pb2.ContainerState(status=types_pb2.CONTAINER_STATUS_EXITED, exit_code=3,
                                       started_at=ts(100), finished_at=ts(90)),
        links=[types_pb2.Link(parent_id=ID_A, child_id=ID_B, name="database")]))
    code, stdout, _ = skiff(capsysbinary, "ps", "-a")
    assert code == 0
    lines = stdout.splitlines()
    assert re.match(r"^CONTAINER ID   IMAGE\s+COMMAND\s+CREATED\s+STATUS\s+PORTS\s+NAMES$", lines[0])
    assert lines[1].startswith("aaaaaaaaaaaa   busybox        ")
    assert '"sh -c while true; d…"' in lines[1]
    assert "4 seconds ago" in lines[1] or "5 seconds ago" in lines[1]
    assert re.search(r"Up [45] seconds", lines[1])
    assert lines[1].rstrip().endswith("web")
    assert lines[2].startswith("bbbbbbbbbbbb   cccccccccccc   ")
    assert '"true"' in lines[2] and "2 hours ago" in lines[2]
    assert "Exited (3) About a minute ago" in lines[2]
    assert lines[2].endswith("   db")
    # every column starts at the same offset on every line (tabwriter)
    for word in ["IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES"]:
        col = lines[0].index(word)
        assert all(line[col - 1] == " " and line[col] != " " for line in lines[1:])
    assert engine.called("ListContainers")[-1].all is True

    code, stdout, _ = skiff(capsysbinary, "ps", "-a", "--no-trunc")
    assert ID_A in stdout and "while true; do sleep 1; done" in stdout and "db,web/database" in stdout
    code, stdout, _ = skiff(capsysbinary, "ps", "-q", "-f", "status=running", "--filter", "name=web")
    assert stdout == "aaaaaaaaaaaa\nbbbbbbbbbbbb\n"
    filters = engine.called("ListContainers")[-1].filters
    assert [(f.key, f.value) for f in filters] == [("status", "running"), ("name", "web")]
    code, _, stderr = skiff(capsysbinary, "ps", "-f", "nokey")
    assert code == 2 and "bad format of filter" in stderr


# --- run -----------------------------------------------------------------------------


def test_run_streams_output_and_exit_code(engine: FakeEngine, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    code, stdout, stderr = skiff(capsysbinary, "run", "--name", "t1", "busybox", "emit", "out:hello",
                                 "err:oops", "exit:3")
    assert code == 3
    assert stdout == "hello\n" and stderr == "oops\n"
    create = engine.called("CreateContainer")[0]
    assert list(create.config.cmd.values) == ["emit", "out:hello", "err:oops", "exit:3"]
    assert not create.config.HasField("entrypoint")
    attach = engine.called("AttachContainer")[0].options
    assert attach.stdout and attach.stderr and attach.logs and not attach.stdin
    assert not engine.called("WaitContainer")


def test_run_rm_waits_for_removal(engine: FakeEngine, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    code, stdout, _ = skiff(capsysbinary, "run", "--rm", "busybox", "emit", "out:x")
    assert code == 0 and stdout == "x\n"
    assert engine.called("CreateContainer")[0].host_config.auto_remove
    waits = engine.called("WaitContainer")
    assert [w.condition for w in waits] == [api_pb2.WAIT_CONDITION_REMOVED]
    assert engine.containers == {}
    code, stdout, _ = skiff(capsysbinary, "ps", "-a", "-q")
    assert stdout == ""


def test_run_detached_prints_id(engine: FakeEngine, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    code, stdout, _ = skiff(capsysbinary, "run", "-d", "busybox", "emit")
    assert code == 0 and stdout == "1" * 64 + "\n"
    assert not engine.called("AttachContainer")


@pytest.mark.parametrize(("cmd", "status"), [("nope", 127), ("/etc", 126)])
def test_run_start_failures(engine: FakeEngine, capsysbinary: pytest.CaptureFixture[bytes],
                            cmd: str, status: int) -> None:
    code, _, stderr = skiff(capsysbinary, "run", "--rm", "busybox", cmd)
    assert code == status
    assert stderr.startswith("skiff: Error response from daemon: exec: ")
    assert stderr.endswith(".\nSee 'skiff run --help'.\n")
    assert engine.containers == {}  # --rm: removed although it never ran


def test_engine_errors(engine: FakeEngine, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    code, _, stderr = skiff(capsysbinary, "run", "missing")
    assert code == 125
    assert stderr == ("Unable to find image 'missing:latest' locally\nlatest: Pulling from library/missing\n"
                      "skiff: Error response from daemon: pull access denied for missing, repository does not exist."
                      "\nSee 'skiff run --help'.\n")
    skiff(capsysbinary, "create", "--name", "dup", "busybox")
    code, _, stderr = skiff(capsysbinary, "create", "--name", "dup", "busybox")
    assert code == 125 and 'The container name "/dup" is already in use' in stderr
    code, _, stderr = skiff(capsysbinary, "start", "ghost")
    assert code == 125 and "Error response from daemon: No such container: ghost" in stderr
    code, stdout, stderr = skiff(capsysbinary, "stop", "dup", "ghost", "-t", "3")
    assert code == 1 and stdout == "dup\n" and stderr == "Error response from daemon: No such container: ghost\n"
    assert engine.called("StopContainer")[0].timeout_seconds == 3
    code, stdout, stderr = skiff(capsysbinary, "rmi", "busybox", "nothere")
    assert code == 1
    assert stdout == f"Untagged: busybox:latest\nDeleted: {IMG_ID}\n"
    assert stderr == "Error response from daemon: No such image: nothere\n"


def test_run_flags(engine: FakeEngine, capsysbinary: pytest.CaptureFixture[bytes],
                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FROM_CLIENT", "yes")
    monkeypatch.delenv("UNSET_HERE", raising=False)
    code, _, _ = skiff(capsysbinary, "create", "-e", "A=1", "--env", "FROM_CLIENT", "-e", "UNSET_HERE",
                       "--entrypoint", "", "-m", "64m", "--pids-limit", "20", "-h", "box", "-w", "/tmp",
                       "-u", "1000:1000", "--net", "none", "-l", "k=v", "--link", "db:d", "busybox",
                       "ls", "-l", "-e", "x")
    assert code == 0
    req = engine.called("CreateContainer")[0]
    assert list(req.config.env) == ["A=1", "FROM_CLIENT=yes"]
    assert req.config.HasField("entrypoint") and list(req.config.entrypoint.values) == []
    assert list(req.config.cmd.values) == ["ls", "-l", "-e", "x"]
    assert req.host_config.memory_bytes == 64 * 1024 * 1024 and req.host_config.pids_limit == 20
    assert (req.config.hostname, req.config.working_dir, req.config.user) == ("box", "/tmp", "1000:1000")
    assert req.host_config.network_mode == "none" and dict(req.config.labels) == {"k": "v"}
    assert list(req.host_config.links) == ["db:d"]


@pytest.mark.parametrize(("value", "message"), [
    ("abc", "invalid argument \"abc\" for \"-m, --memory\" flag: invalid size: 'abc'"),
    ("4m", "Minimum memory limit allowed is 6MB"),
])
def test_memory_errors(engine: FakeEngine, capsysbinary: pytest.CaptureFixture[bytes],
                       value: str, message: str) -> None:
    code, _, stderr = skiff(capsysbinary, "run", "-m", value, "busybox")
    assert code == 125
    assert stderr == f"skiff: {message}\nSee 'skiff run --help'.\n"
    assert not engine.called("CreateContainer")


def test_usage_errors(engine: FakeEngine, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    code, _, stderr = skiff(capsysbinary, "run", "--bogus", "busybox")
    assert code == 125 and "See 'skiff run --help'." in stderr
    code, _, stderr = skiff(capsysbinary, "run")
    assert code == 125
    code, _, stderr = skiff(capsysbinary, "ps", "--bogus")
    assert code == 2 and "See 'skiff ps --help'." in stderr
    code, _, stderr = skiff(capsysbinary, "frobnicate")
    assert code == 2 and "See 'skiff --help'." in stderr
    assert "Traceback" not in stderr


def test_sigint_is_forwarded(engine: FakeEngine, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    def interrupt() -> None:
        engine.attached.wait(10)
        engine.started.wait(10)
        time.sleep(0.3)  # the proxy is installed once StartContainer has returned
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    code, _, _ = skiff(capsysbinary, "run", "busybox", "sleepy")
    assert code == 130
    assert engine.kill_signal == "SIGINT"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# --- other commands ------------------------------------------------------------------


def test_import_streams_metadata_then_chunks(engine: FakeEngine, capsysbinary: pytest.CaptureFixture[bytes],
                                            sockdir: Path) -> None:
    tarball = sockdir / "rootfs.tar"
    data = os.urandom((1 << 20) + 100)
    tarball.write_bytes(data)
    code, stdout, _ = skiff(capsysbinary, "import", "-c", "CMD [\"sh\"]", "-m", "hi", str(tarball), "bb:1")
    assert code == 0 and stdout == IMG_ID + "\n"
    reqs = engine.import_requests
    assert reqs[0].WhichOneof("part") == "metadata"
    assert reqs[0].metadata.reference == "bb:1" and list(reqs[0].metadata.changes) == ['CMD ["sh"]']
    assert reqs[0].metadata.message == "hi"
    assert [len(r.chunk) for r in reqs[1:]] == [1 << 20, 100]
    assert b"".join(r.chunk for r in reqs[1:]) == data
    code, _, stderr = skiff(capsysbinary, "import", str(sockdir / "none.tar"))
    assert code == 1 and "no such file or directory" in stderr


def test_images(engine: FakeEngine, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    code, stdout, _ = skiff(capsysbinary, "images")
    assert code == 0
    lines = stdout.splitlines()
    assert re.match(r"^REPOSITORY\s+TAG\s+IMAGE ID\s+CREATED\s+SIZE$", lines[0])
    assert re.match(r"^busybox\s+latest\s+cccccccccccc\s+2 hours ago\s+4.26MB$", lines[1])
    assert re.match(r"^localhost:5000/bb\s+1\s+cccccccccccc", lines[2])
    assert re.match(r"^<none>\s+<none>\s+dddddddddddd\s+3 days ago\s+1.23kB$", lines[3])
    assert skiff(capsysbinary, "images", "-q")[1] == "cccccccccccc\ndddddddddddd\n"


def test_logs(engine: FakeEngine, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    add(engine, api_pb2.Container(id=ID_A, name="web"))
    code, stdout, stderr = skiff(capsysbinary, "logs", "-t", "--tail", "5", "-f", "web")
    assert code == 0
    assert stdout == "2023-11-14T22:13:20.000000005Z hello\n"
    assert stderr == "2023-11-14T22:13:20.000000005Z oops\n"
    req = engine.called("ContainerLogs")[0]
    assert (req.tail, req.follow, req.stdout, req.stderr) == (5, True, True, True)
    skiff(capsysbinary, "logs", "web")
    assert engine.called("ContainerLogs")[1].tail == -1


def test_wait_kill_rm(engine: FakeEngine, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    add(engine, api_pb2.Container(id=ID_A, name="web", state=types_pb2.ContainerState(exit_code=7)))
    assert skiff(capsysbinary, "wait", "web")[:2] == (0, "7\n")
    assert skiff(capsysbinary, "kill", "-s", "HUP", "web")[:2] == (0, "web\n")
    assert engine.called("KillContainer")[0].signal == "HUP"
    code, stdout, stderr = skiff(capsysbinary, "rm", "-f", "web", "ghost")
    assert (code, stdout) == (1, "web\n") and "No such container: ghost" in stderr
    assert engine.called("RemoveContainer")[0].force


def test_rm_of_several_in_one_call(engine: FakeEngine, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    engine.batch_rm = True
    add(engine, api_pb2.Container(id=ID_A, name="web"))
    add(engine, api_pb2.Container(id=ID_B, name="db"))
    code, stdout, stderr = skiff(capsysbinary, "rm", "-v", "web", "ghost", "db")
    assert (code, stdout) == (1, "web\ndb\n")
    assert stderr == "Error response from daemon: No such container: ghost\n"
    (req,) = engine.called("RemoveContainers")
    assert list(req.containers) == ["web", "ghost", "db"] and req.remove_volumes and not req.force
    assert not engine.called("RemoveContainer") and engine.containers == {}


def test_inspect(engine: FakeEngine, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    add(engine, api_pb2.Container(
        id=ID_A, name="web", image="busybox", image_id=IMG_ID, path="sh", args=["-c", "x"],
        config=types_pb2.ContainerConfig(image="busybox", cmd=types_pb2.StringList(values=["sh", "-c", "x"])),
        state=types_pb2.ContainerState(status=types_pb2.CONTAINER_STATUS_RUNNING, pid=42),
        network_settings=api_pb2.NetworkSettings(sandbox_key="/run/skiff/netns/a")))
    code, stdout, stderr = skiff(capsysbinary, "inspect", "web", "busybox")
    assert code == 0, stderr
    data = json.loads(stdout)
    assert data[0]["Id"] == ID_A and data[0]["Name"] == "/web"
    assert data[0]["State"]["Status"] == "running" and data[0]["State"]["Running"] is True
    assert data[0]["State"]["Pid"] == 42 and data[0]["State"]["FinishedAt"] == "0001-01-01T00:00:00Z"
    assert data[0]["Config"]["Cmd"] == ["sh", "-c", "x"] and data[0]["Config"]["Entrypoint"] is None
    assert data[0]["NetworkSettings"]["SandboxKey"] == "/run/skiff/netns/a"
    assert data[1]["RootFS"] == {"Type": "layers", "Layers": ["sha256:" + "e" * 64]}
    code, stdout, stderr = skiff(capsysbinary, "inspect", "-f", "{{.State.Pid}} {{json .Config.Cmd}}", "web",
                                 "nothing")
    assert code == 1 and stdout == '42 ["sh","-c","x"]\n' and stderr == "Error: No such object: nothing\n"
    code, stdout, stderr = skiff(capsysbinary, "inspect", "--type", "container", "busybox")
    assert code == 1 and stdout == "[]\n" and stderr == "Error: No such container: busybox\n"


def test_version_and_info(engine: FakeEngine, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    code, stdout, _ = skiff(capsysbinary, "version")
    assert code == 0 and stdout.startswith("Client:\n Version:") and "Server:\n Engine:\n  Version:" in stdout
    code, stdout, _ = skiff(capsysbinary, "info")
    assert " Containers: 3\n  Running: 1\n" in stdout and " Total Memory: 1.944GiB\n" in stdout
    code, stdout, _ = skiff(capsysbinary, "info", "--format", "{{.Containers}} {{.ContainersRunning}} {{.MemTotal}}")
    assert (code, stdout) == (0, "3 1 2087354368\n")
    code, stdout, _ = skiff(capsysbinary, "version", "-f", "{{.Client.ApiVersion}} {{json .Server.Os}}")
    assert (code, stdout) == (0, 'v1 "linux"\n')


# --- connection, startup -------------------------------------------------------------


def test_connection_refused(capsysbinary: pytest.CaptureFixture[bytes], sockdir: Path) -> None:
    host = f"unix://{sockdir}/nobody.sock"
    code, _, stderr = skiff(capsysbinary, "-H", host, "ps")
    assert code == 1
    assert stderr == f"Cannot connect to the skiff daemon at {host}. Is the skiff daemon running?\n"
    code, _, stderr = skiff(capsysbinary, "-H", host, "run", "busybox")
    assert code == 125
    assert stderr == (f"skiff: Cannot connect to the skiff daemon at {host}. Is the skiff daemon running?\n"
                      "See 'skiff run --help'.\n")


def test_host_from_env(engine: FakeEngine, capsysbinary: pytest.CaptureFixture[bytes],
                       monkeypatch: pytest.MonkeyPatch) -> None:
    host = os.environ["SKIFF_HOST"]
    monkeypatch.setenv("SKIFF_HOST", "unix:///nonexistent/skiff.sock")
    assert skiff(capsysbinary, "ps")[0] == 1
    assert skiff(capsysbinary, "-H", host, "ps")[0] == 0


@pytest.mark.parametrize("argv", [["--help"], ["version", "--help"], ["run", "--help"], ["-v"]])
def test_help_does_not_import_grpc(argv: list[str]) -> None:
    code = (
        "import sys\n"
        "from skiff.cli.main import main\n"
        f"rc = main({argv!r})\n"
        "assert rc == 0, rc\n"
        "loaded = [m for m in sys.modules if m == 'grpc' or m.startswith(('grpc.', 'google.protobuf'))]\n"
        "assert not loaded, loaded\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout or "skiff version" in proc.stdout


def test_daemon_argv() -> None:
    assert cli_main._daemon_argv(["-d", "--data-root", "/x"]) == ["--data-root", "/x"]
    assert cli_main._daemon_argv(["-D", "-d", "-H", "unix:///s"]) == ["-D", "-H", "unix:///s"]
    assert cli_main._daemon_argv(["daemon", "--debug"]) == ["--debug"]
    assert cli_main._daemon_argv(["-H", "daemon", "ps"]) is None
    assert cli_main._daemon_argv(["run", "-d", "busybox"]) is None
