"""In-memory graph, exec and net backends for the gateway's unit tests (and tests of the fakes).

They behave plausibly enough to drive the orchestration: the exec fake runs
"programs" by their argv[0] (``sleep`` runs until signalled, ``trap`` ignores
SIGTERM, ``echo`` prints and exits, ``exit N`` exits, ``missing`` is not found),
keeps logs and exit codes, and blocks in wait/follow like execsvc does.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import signal
import threading
import time
from collections.abc import Iterator

import pytest
from google.protobuf import timestamp_pb2

from skiff.apiserver.callctx import Call
from skiff.common import errors
from skiff.exec.v1 import exec_pb2
from skiff.graph.v1 import graph_pb2
from skiff.net.v1 import net_pb2
from skiff.types.v1 import types_pb2

Status = types_pb2.ContainerStatus
_clock = itertools.count(1_700_000_000)


def _now() -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=next(_clock))


class FakeGraph:
    def __init__(self) -> None:
        self.images: dict[str, types_pb2.Image] = {}
        self.containers: dict[str, graph_pb2.Container] = {}
        self.calls: list[str] = []
        self.imported_chunks: list[bytes] = []
        self._ids = itertools.count(1)
        self.add_image("busybox:latest", cmd=["sh"])

    def add_image(self, tag: str, cmd: list[str]) -> types_pb2.Image:
        image_id = "sha256:" + hashlib.sha256(tag.encode()).hexdigest()
        image = types_pb2.Image(id=image_id, repo_tags=[tag], size=1000, created=_now(), os="linux",
                                config=types_pb2.ContainerConfig(cmd=types_pb2.StringList(values=cmd)))
        self.images[image_id] = image
        return image

    def _resolve_image(self, ref: str) -> types_pb2.Image:
        full = ref if ":" in ref else ref + ":latest"
        for image in self.images.values():
            if full in image.repo_tags or image.id == ref or image.id.startswith("sha256:" + ref):
                return image
        raise errors.NotFound(f"No such image: {ref}", reason=errors.IMAGE_NOT_FOUND)

    def create_container(self, req: graph_pb2.CreateContainerRequest) -> graph_pb2.CreateContainerResponse:
        self.calls.append("create_container")
        image = self._resolve_image(req.config.image)
        name = req.name or f"name_{next(self._ids)}"
        for c in self.containers.values():
            if c.name == name:
                raise errors.Conflict(f"name {name} in use", reason=errors.NAME_IN_USE,
                                      metadata={"container_id": c.id})
        cid = hashlib.sha256(f"{name}{time.time()}".encode()).hexdigest()
        config = types_pb2.ContainerConfig()
        config.CopyFrom(req.config)
        argv = list(req.config.cmd.values) if req.config.HasField("cmd") else list(image.config.cmd.values)
        record = graph_pb2.Container(id=cid, name=name, image_id=image.id, created=_now(), config=config,
                                     host_config=req.host_config, path=argv[0], args=argv[1:])
        self.containers[cid] = record
        return graph_pb2.CreateContainerResponse(container=record, rootfs=self._rootfs(cid))

    @staticmethod
    def _rootfs(cid: str) -> types_pb2.Mount:
        return types_pb2.Mount(type="overlay", source="overlay", options=[f"upperdir=/x/{cid}/upper"])

    def get_container(self, ref: str) -> graph_pb2.Container:
        self.calls.append("get_container")
        if ref in self.containers:
            return self.containers[ref]
        by_name = [c for c in self.containers.values() if c.name == ref]
        matches = by_name or [c for c in self.containers.values() if ref and c.id.startswith(ref)]
        if len(matches) > 1:
            raise errors.InvalidArgument(f"ambiguous: {ref}")
        if not matches:
            raise errors.NotFound(f"No such container: {ref}", reason=errors.CONTAINER_NOT_FOUND)
        return matches[0]

    def list_containers(self, filters: list[types_pb2.Filter] | None = None) -> list[graph_pb2.Container]:
        """As graphsvc: name (regexp), id (prefix), label (all must match), ancestor (exact image)."""
        self.calls.append("list_containers")
        found = list(self.containers.values())
        by_key: dict[str, list[str]] = {}
        for f in filters or []:
            by_key.setdefault(f.key, []).append(f.value)
        if "name" in by_key:
            found = [c for c in found if any(re.search(v, c.name) for v in by_key["name"])]
        if "id" in by_key:
            found = [c for c in found if any(c.id.startswith(v) for v in by_key["id"])]
        for label in by_key.get("label", []):
            key, sep, value = label.partition("=")
            found = [c for c in found if key in c.config.labels and (not sep or c.config.labels[key] == value)]
        if "ancestor" in by_key:
            wanted = {self._resolve_image(v).id for v in by_key["ancestor"]}
            found = [c for c in found if c.image_id in wanted]
        return found

    def list_containers_since(self, since: str) -> tuple[str, list[graph_pb2.Container] | None]:
        """As graphsvc: the generation changes with any change to a record (here: its content)."""
        found = self.list_containers()
        generation = hashlib.sha256(b"".join(c.SerializeToString(deterministic=True) for c in found)).hexdigest()
        return generation, None if since == generation else found

    def delete_link(self, parent: str, name: str) -> None:
        self.calls.append("delete_link")
        p = self.get_container(parent)
        kept = [lk for lk in p.links if lk.name != name]
        if len(kept) == len(p.links):
            raise errors.NotFound(f"No such link: /{p.name}/{name}")
        del p.links[:]
        p.links.extend(kept)

    def container_sizes(self, container_ids: list[str]) -> dict[str, tuple[int, int]]:
        return {cid: (10, 1010) for cid in container_ids}

    def get_rootfs(self, container_id: str) -> graph_pb2.GetRootfsResponse:
        self.get_container(container_id)
        return graph_pb2.GetRootfsResponse(rootfs=self._rootfs(container_id), upper_dir="/x/upper")

    def delete_container(self, container_id: str, remove_volumes: bool = False) -> None:
        self.calls.append("delete_container")
        if self.containers.pop(container_id, None) is None:
            raise errors.NotFound(f"No such container: {container_id}", reason=errors.CONTAINER_NOT_FOUND)

    def get_containers(self, refs: list[str]) -> list[graph_pb2.Container | errors.SkiffError]:
        before = len(self.calls)
        out: list[graph_pb2.Container | errors.SkiffError] = []
        for ref in refs:
            try:
                out.append(self.get_container(ref))
            except errors.SkiffError as e:
                out.append(e)
        del self.calls[before:]  # one call, not one per reference
        self.calls.append("get_containers")
        return out

    def delete_containers(self, container_ids: list[str], remove_volumes: bool = False
                          ) -> dict[str, errors.SkiffError]:
        self.calls.append("delete_containers")
        failed: dict[str, errors.SkiffError] = {}
        for cid in container_ids:
            if self.containers.pop(cid, None) is None:
                failed[cid] = errors.NotFound(f"No such container: {cid}", reason=errors.CONTAINER_NOT_FOUND)
            for other in list(self.containers.values()):  # links to it go with it (force)
                kept = [lk for lk in other.links if lk.child_id != cid]
                if len(kept) != len(other.links):
                    del other.links[:]
                    other.links.extend(kept)
        return failed

    def update_host_config(self, container_id: str, host_config: types_pb2.HostConfig) -> None:
        self.calls.append("update_host_config")
        self.get_container(container_id).host_config.CopyFrom(host_config)

    def set_restart_state(self, container_id: str, state: graph_pb2.RestartState) -> None:
        self.calls.append("set_restart_state")
        self.get_container(container_id).restart_state.CopyFrom(state)

    def import_image(self, requests: Iterator[graph_pb2.ImportImageRequest], call: Call) -> types_pb2.Image:
        meta = next(requests).metadata
        for req in requests:
            self.imported_chunks.append(req.chunk)
        image = self.add_image(meta.reference or "imported:latest", cmd=[])
        image.size = sum(map(len, self.imported_chunks))
        image.comment = meta.message
        return image

    def list_images(self, req: graph_pb2.ListImagesRequest) -> list[types_pb2.Image]:
        return list(self.images.values())

    def get_image(self, ref: str) -> types_pb2.Image:
        return self._resolve_image(ref)

    def remove_image(self, req: graph_pb2.RemoveImageRequest) -> graph_pb2.RemoveImageResponse:
        image = self._resolve_image(req.image)
        if not req.force and any(c.image_id == image.id for c in self.containers.values()):
            raise errors.Conflict("image is in use", reason=errors.IMAGE_IN_USE)
        del self.images[image.id]
        items = [types_pb2.ImageDeleteItem(untagged=t) for t in image.repo_tags]
        return graph_pb2.RemoveImageResponse(items=[*items, types_pb2.ImageDeleteItem(deleted=image.id)])

    def get_store_info(self) -> graph_pb2.GetStoreInfoResponse:
        return graph_pb2.GetStoreInfoResponse(storage_driver="vfs", images=len(self.images),
                                              containers=len(self.containers), data_root="/var/lib/skiff")


class FakeStream:
    """Follows a task's log list like execsvc: ends when the task has exited and all is read."""

    def __init__(self, fake: FakeExec, req: exec_pb2.ReadLogsRequest):
        self._fake, self._req = fake, req
        entries = fake.logs[req.id]
        self._pos = len(entries) - req.tail if 0 <= req.tail <= len(entries) else 0
        self.cancelled = False

    def __iter__(self) -> FakeStream:
        return self

    def __next__(self) -> types_pb2.LogEntry:
        with self._fake.cond:
            while True:
                if self.cancelled:
                    raise errors.Internal("cancelled", reason="CANCELLED")
                entries = self._fake.logs[self._req.id]
                while self._pos < len(entries):
                    entry = entries[self._pos]
                    self._pos += 1
                    wanted = self._req.stdout if entry.stream == types_pb2.LOG_STREAM_STDOUT else self._req.stderr
                    if wanted:
                        return entry
                if not self._req.follow or not self._fake.running(self._req.id):
                    raise StopIteration
                self._fake.cond.wait()

    def cancel(self) -> None:
        with self._fake.cond:
            self.cancelled = True
            self._fake.cond.notify_all()


class FakeStdin:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> bool:
        self.cancelled = True
        return True


class FakeExec:
    def __init__(self) -> None:
        self.tasks: dict[str, exec_pb2.Task] = {}
        self.specs: dict[str, exec_pb2.TaskSpec] = {}
        self.logs: dict[str, list[types_pb2.LogEntry]] = {}
        self.signals: dict[str, list[int]] = {}
        self.calls: list[str] = []
        self.fail_delete: errors.SkiffError | None = None
        self.streams: list[FakeStream] = []
        self.cond = threading.Condition()
        self.stdin: dict[str, list[bytes]] = {}
        self.resizes: list[tuple[int, int]] = []
        self.stdin_closed: set[str] = set()

    def running(self, task_id: str) -> bool:
        task = self.tasks.get(task_id)
        return task is not None and task.state.status == Status.CONTAINER_STATUS_RUNNING

    def _exit(self, task_id: str, code: int) -> None:
        state = self.tasks[task_id].state
        state.status, state.exit_code, state.pid = Status.CONTAINER_STATUS_EXITED, code, 0
        state.finished_at.CopyFrom(_now())
        self.cond.notify_all()

    def emit(self, task_id: str, data: bytes, stream: int = types_pb2.LOG_STREAM_STDOUT) -> None:
        with self.cond:
            self.logs[task_id].append(types_pb2.LogEntry(stream=stream, data=data, time=_now()))
            self.cond.notify_all()

    def start_task(self, spec: exec_pb2.TaskSpec) -> exec_pb2.Task:
        self.calls.append("start_task")
        with self.cond:
            if self.running(spec.id):
                raise errors.AlreadyExists("running")
            program = spec.args[0] if spec.args else ""
            if program == "missing":
                raise errors.FailedPrecondition(
                    f'exec: "{program}": executable file not found in $PATH', reason=errors.COMMAND_NOT_FOUND
                )
            self.specs[spec.id] = spec
            self.logs.setdefault(spec.id, [])
            self.signals[spec.id] = []
            state = types_pb2.ContainerState(status=Status.CONTAINER_STATUS_RUNNING, pid=4242, started_at=_now())
            self.tasks[spec.id] = exec_pb2.Task(id=spec.id, state=state, log_path=f"/logs/{spec.id}.json")
            if program == "echo":
                self.emit(spec.id, (" ".join(spec.args[1:]) + "\n").encode())
                self._exit(spec.id, 0)
            elif program == "exit":
                self._exit(spec.id, int(spec.args[1]))
            return self.tasks[spec.id]

    def get_task(self, task_id: str) -> exec_pb2.Task:
        self.calls.append("get_task")
        with self.cond:
            if task_id not in self.tasks:
                raise errors.NotFound(f"no task {task_id}", reason="TASK_NOT_FOUND")
            task = exec_pb2.Task()
            task.CopyFrom(self.tasks[task_id])
            return task

    def list_tasks(self) -> list[exec_pb2.Task]:
        self.calls.append("list_tasks")
        with self.cond:
            return [exec_pb2.Task(id=t.id, state=t.state, log_path=t.log_path) for t in self.tasks.values()]

    def get_tasks(self, task_ids: list[str]) -> dict[str, exec_pb2.Task]:
        with self.cond:
            found = {t: self.get_task(t) for t in task_ids if t in self.tasks}
            self.calls[len(self.calls) - len(found):] = ["get_tasks"]
            return found

    def delete_tasks(self, task_ids: list[str], force: bool, remove_logs: bool) -> dict[str, errors.SkiffError]:
        before = len(self.calls)
        failed: dict[str, errors.SkiffError] = {}
        for t in task_ids:
            try:
                self.delete_task(t, force, remove_logs)
            except errors.SkiffError as e:
                failed[t] = e
        del self.calls[before:]
        self.calls.append("delete_tasks")
        return failed

    def kill_task(self, task_id: str, signal_number: int) -> None:
        with self.cond:
            if not self.running(task_id):
                raise errors.FailedPrecondition("not running", reason=errors.CONTAINER_NOT_RUNNING)
            self.signals[task_id].append(signal_number)
            ignores_term = self.specs[task_id].args[0] == "trap"
            if signal_number == signal.SIGKILL or not (ignores_term and signal_number == signal.SIGTERM):
                self._exit(task_id, 128 + signal_number)

    def wait_task(
        self, task_id: str, timeout: float | None = None, call: Call | None = None
    ) -> exec_pb2.WaitTaskResponse:
        call = call or Call()
        limit = call.remaining(timeout)
        end = None if limit is None else time.monotonic() + limit
        call.on_cancel(self._wake)
        with self.cond:
            while True:
                if task_id not in self.tasks:
                    raise errors.NotFound(f"no task {task_id}", reason="TASK_NOT_FOUND")
                if not self.running(task_id):
                    state = self.tasks[task_id].state
                    return exec_pb2.WaitTaskResponse(exit_code=state.exit_code, finished_at=state.finished_at)
                if call.cancelled:
                    raise errors.DeadlineExceeded("cancelled", reason="CANCELLED")
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    raise errors.DeadlineExceeded("deadline exceeded")
                self.cond.wait(left)

    def _wake(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def delete_task(self, task_id: str, force: bool, remove_logs: bool) -> None:
        self.calls.append("delete_task")
        if self.fail_delete is not None:
            raise self.fail_delete
        with self.cond:
            if self.running(task_id):
                if not force:
                    raise errors.FailedPrecondition("running", reason=errors.CONTAINER_RUNNING)
                self._exit(task_id, 137)
            self.tasks.pop(task_id, None)
            if remove_logs:
                self.logs.pop(task_id, None)
            self.cond.notify_all()

    def read_logs(self, req: exec_pb2.ReadLogsRequest, call: Call | None = None) -> FakeStream:
        with self.cond:
            if req.id not in self.tasks:
                raise errors.NotFound(f"no task {req.id}", reason="TASK_NOT_FOUND")
            stream = FakeStream(self, req)
            self.streams.append(stream)
        if call is not None:
            call.on_cancel(stream.cancel)
        return stream

    def attach_stdin(self, requests: Iterator[exec_pb2.AttachStdinRequest]) -> FakeStdin:
        """As execsvc: data and resizes in order; EOF at a normal end with close_on_eof (``cat`` then exits)."""
        handle = FakeStdin()

        def consume() -> None:
            target = None
            for req in requests:
                if handle.cancelled:
                    return
                part = req.WhichOneof("part")
                with self.cond:
                    if part == "target":
                        target = req.target
                    elif part == "data" and target is not None:
                        self.stdin.setdefault(target.task_id, []).append(req.data)
                        self.cond.notify_all()
                    elif part == "resize":
                        self.resizes.append((req.resize.rows, req.resize.cols))
                        self.cond.notify_all()
            if handle.cancelled or target is None or not target.close_on_eof:
                return
            with self.cond:
                self.stdin_closed.add(target.task_id)
                if self.specs[target.task_id].args[0] == "cat" and self.running(target.task_id):
                    self.emit(target.task_id, b"".join(self.stdin.get(target.task_id, [])))
                    self._exit(target.task_id, 0)
                self.cond.notify_all()

        threading.Thread(target=consume, daemon=True).start()
        return handle

    def update_task(self, task_id: str, resources: exec_pb2.TaskSpec) -> None:
        self.calls.append("update_task")
        if task_id not in self.tasks:
            raise errors.NotFound(f"no task {task_id}", reason="TASK_NOT_FOUND")

    def get_runtime_info(self) -> exec_pb2.GetRuntimeInfoResponse:
        return exec_pb2.GetRuntimeInfoResponse(cgroup_version="v2", exec_root="/run/skiff",
                                               tasks_running=sum(map(self.running, list(self.tasks))))


class FakeNet:
    def __init__(self) -> None:
        self.endpoints: dict[str, net_pb2.Endpoint] = {}
        self.calls: list[str] = []

    def create_endpoint(self, container_id: str, network_mode: str,
                        options: net_pb2.CreateEndpointRequest | None = None) -> net_pb2.Endpoint:
        self.calls.append("create_endpoint")
        self.options = options
        if network_mode not in ("none", "host", "bridge"):
            raise errors.InvalidArgument(f"unknown network mode {network_mode}")
        netns = "" if network_mode == "host" else f"/run/skiff/netns/{container_id[:12]}"
        endpoint = net_pb2.Endpoint(container_id=container_id, network_mode=network_mode, netns_path=netns)
        self.endpoints[container_id] = endpoint
        return endpoint

    def get_endpoint(self, container_id: str) -> net_pb2.Endpoint:
        if container_id not in self.endpoints:
            raise errors.NotFound(f"no endpoint for {container_id}")
        return self.endpoints[container_id]

    def list_endpoints(self) -> list[net_pb2.Endpoint]:
        self.calls.append("list_endpoints")
        return list(self.endpoints.values())

    def delete_endpoint(self, container_id: str, release: bool = False) -> None:
        self.calls.append("release_endpoint" if release else "delete_endpoint")
        self.endpoints.pop(container_id, None)

    def delete_endpoints(self, container_ids: list[str]) -> dict[str, errors.SkiffError]:
        self.calls.append("delete_endpoints")
        for cid in container_ids:
            self.endpoints.pop(cid, None)
        return {}


# --- the fakes themselves behave like the services they stand for --------------------------


def test_fake_exec_follow_ends_at_exit() -> None:
    fake = FakeExec()
    fake.start_task(exec_pb2.TaskSpec(id="c1", args=["sleep"]))
    stream = fake.read_logs(exec_pb2.ReadLogsRequest(id="c1", follow=True, tail=-1, stdout=True))
    fake.emit("c1", b"hi\n")
    assert next(stream).data == b"hi\n"
    fake.kill_task("c1", signal.SIGTERM)
    assert list(stream) == []
    assert fake.wait_task("c1").exit_code == 143


def test_fake_exec_wait_times_out() -> None:
    fake = FakeExec()
    fake.start_task(exec_pb2.TaskSpec(id="c1", args=["trap"]))
    fake.kill_task("c1", signal.SIGTERM)
    with pytest.raises(errors.DeadlineExceeded):
        fake.wait_task("c1", timeout=0.05)
