"""gRPC adapters for execsvc: task specs in, runtime calls, task states out."""

from __future__ import annotations

import dataclasses
import queue
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
from google.protobuf import timestamp_pb2

from skiff.common import errors, grpcerr, itemerr, trace
from skiff.common.faults import crash_point
from skiff.common.streams import EXIT_CODE_KEY, OOM_KILLED_KEY
from skiff.exec.v1 import exec_pb2, exec_pb2_grpc
from skiff.execsvc import health, lifecycle
from skiff.execsvc import mounts as mountsmod
from skiff.execsvc.copying import Copier, CopyRPCs
from skiff.execsvc.devices import DeviceMapping
from skiff.execsvc.exec import ExecRPCs
from skiff.execsvc.exits import ExitWatcher
from skiff.execsvc.nsmodes import NsModes, host_hostname
from skiff.execsvc.runtime import Runtime, State
from skiff.execsvc.spec import ContainerSpec, RootfsMount, write_etc_files
from skiff.execsvc.stdio import StdinRPCs
from skiff.types.v1 import types_pb2

_STATUS = {
    "created": types_pb2.CONTAINER_STATUS_CREATED,
    "running": types_pb2.CONTAINER_STATUS_RUNNING,
    "exited": types_pb2.CONTAINER_STATUS_EXITED,
}
_STREAM = {"stdout": types_pb2.LOG_STREAM_STDOUT, "stderr": types_pb2.LOG_STREAM_STDERR}


def _ts(rfc3339: str) -> timestamp_pb2.Timestamp | None:
    if not rfc3339:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromJsonString(rfc3339)
    return ts


def state_to_proto(state: State) -> types_pb2.ContainerState:
    return types_pb2.ContainerState(
        status=_STATUS.get(state.status, types_pb2.CONTAINER_STATUS_UNSPECIFIED),
        pid=state.pid if state.status == "running" else 0,
        exit_code=state.exit_code or 0,
        started_at=_ts(state.started_at),
        finished_at=_ts(state.finished_at),
        oom_killed=state.oom_killed,
        error=state.error,
    )


class Tasks:
    """execsvc's domain: the runtime plus where logs live (in the data root, kept across restarts)."""

    def __init__(self, runtime: Runtime, data_root: Path):
        self.runtime = runtime
        self.logs_root = data_root / "containers"

    def log_path(self, cid: str) -> Path:
        self.runtime.bundle(cid)  # validates the id
        return self.logs_root / cid / f"{cid}-json.log"

    def spec(self, ts: exec_pb2.TaskSpec) -> ContainerSpec:
        if ts.host_network:
            mode, netns = "host", None
        elif ts.netns_path:
            mode, netns = "path", ts.netns_path
        else:
            mode, netns = "none", None
        return ContainerSpec(
            id=ts.id, args=tuple(ts.args), env=tuple(ts.env), cwd=ts.working_dir or "/", user=ts.user,
            group_add=tuple(ts.group_add),
            hostname=ts.hostname, network_mode=mode, netns_path=netns,
            rootfs=RootfsMount(type=ts.rootfs.type, source=ts.rootfs.source, options=tuple(ts.rootfs.options)),
            memory_limit=ts.memory_bytes, pids_limit=ts.pids_limit, log_path=str(self.log_path(ts.id)),
            etc_hosts=ts.etc_hosts, etc_resolv_conf=ts.etc_resolv_conf, etc_hostname=ts.etc_hostname,
            options=lifecycle.options_from_proto(ts), rlimits=lifecycle.rlimits_from_proto(ts),
            terminal=ts.tty, open_stdin=ts.open_stdin,
            console_size=(min(ts.console_size.rows, 0xFFFF), min(ts.console_size.cols, 0xFFFF)),
            mounts=mountsmod.from_proto(ts.mounts),
            log_driver=ts.log_driver or "json-file", log_max_size=ts.log_max_size,
            log_max_file=max(ts.log_max_file, 1), log_compress=ts.log_compress,
            ns=NsModes(pid=ts.pid_mode, uts=ts.uts_mode, ipc=ts.ipc_mode, cgroupns=ts.cgroupns_mode,
                       userns=ts.userns_mode),
            devices=tuple(DeviceMapping(d.path_on_host, d.path_in_container, d.cgroup_permissions or "rwm")
                          for d in ts.devices),
            init_path=str(self.runtime.init_path) if ts.init else "",
            healthcheck=health.config_from_proto(ts.healthcheck),
        )

    def start(self, ts: exec_pb2.TaskSpec) -> State:
        spec = self.spec(ts)
        if spec.ns.uts == "host" and spec.etc_hostname:  # as Docker: the host's name in /etc/hostname
            spec = dataclasses.replace(spec, etc_hostname=host_hostname() + "\n")
        spec.validate()
        mountsmod.prepare_host_paths(spec.mounts)
        try:
            current = self.runtime.state(spec.id)
        except errors.NotFound:
            current = None
        if current is not None:
            if current.status == "running":
                raise errors.AlreadyExists(f"container {spec.id} is already running",
                                           reason=errors.CONTAINER_RUNNING)
            self.runtime.delete(spec.id)  # the previous run's bundle; its log stays
        self.log_path(spec.id).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Before create(): from then on the task is visible (as created); keep that window short.
        with trace.span("bundle"):
            write_etc_files(spec, self.runtime.bundle(spec.id))  # bind-mounted by the init (config.json mounts)
            self.runtime.create(spec)
        try:
            self.runtime.start(spec.id, created=True)  # create() has just made the cgroup
        except errors.SkiffError:
            self.runtime.delete(spec.id, force=True)
            raise
        return self.runtime.state(spec.id)

    def delete(self, cid: str, force: bool, remove_logs: bool) -> None:
        try:
            self.runtime.delete(cid, force=force)
        except errors.NotFound:
            pass
        if remove_logs:
            shutil.rmtree(self.log_path(cid).parent, ignore_errors=True)


class ExecServicer(ExecRPCs, StdinRPCs, CopyRPCs, exec_pb2_grpc.ExecServiceServicer):
    def __init__(self, tasks: Tasks):
        self.tasks = tasks
        self.runtime = tasks.runtime
        self.copier = Copier(tasks.runtime)
        self.lifecycle = lifecycle.Lifecycle(tasks.runtime)
        self.health = health.Monitors(tasks.runtime)
        threading.Thread(target=self.health.resume_all, name="health-resume", daemon=True).start()
        #: task exits for WatchTasks: one thread watching every running task's monitor
        self.exits = ExitWatcher(tasks.runtime)
        tasks.runtime.on_delete = self.exits.reap
        self.exits.start()

    def _task(self, cid: str) -> exec_pb2.Task:
        raw = self.runtime.state(cid)
        state = state_to_proto(raw)
        checked = self.health.health(cid, raw.status, raw.started_at)
        if checked is not None:
            state.health.CopyFrom(checked)
        if state.status == types_pb2.CONTAINER_STATUS_RUNNING and self.lifecycle.paused(cid):
            state.status = types_pb2.CONTAINER_STATUS_PAUSED
        return exec_pb2.Task(id=cid, state=state, log_path=str(self.tasks.log_path(cid)))

    def StartTask(self, request: exec_pb2.StartTaskRequest,
                  context: grpc.ServicerContext) -> exec_pb2.StartTaskResponse:
        with grpcerr.handle(context), self.copier.lock(request.spec.id):  # not during a cp of its files
            with self.health.quiesce(request.spec.id):  # the previous run's bundle goes
                self.tasks.start(request.spec)
            self.health.ensure(request.spec.id)
            self.exits.add(request.spec.id)
            return exec_pb2.StartTaskResponse(task=self._task(request.spec.id))

    def WatchTasks(self, request: exec_pb2.WatchTasksRequest,
                   context: grpc.ServicerContext) -> Iterator[exec_pb2.WatchTasksResponse]:
        running, exits = self.exits.subscribe()
        try:
            yield exec_pb2.WatchTasksResponse(snapshot=True, running=running)
            while context.is_active() and not self.exits.closed:
                try:
                    exit_ = exits.get(timeout=0.25)
                except queue.Empty:
                    continue
                yield exec_pb2.WatchTasksResponse(exit=exit_)
        finally:
            self.exits.unsubscribe(exits)

    def GetTask(self, request: exec_pb2.GetTaskRequest, context: grpc.ServicerContext) -> exec_pb2.GetTaskResponse:
        with grpcerr.handle(context):
            task = self._task(request.id)
            if trace.current() is not None and task.state.status == types_pb2.CONTAINER_STATUS_EXITED:
                self.runtime.trace_exit(request.id, self.tasks.log_path(request.id))  # exited before a wait came
            return exec_pb2.GetTaskResponse(task=task)

    def ListTasks(self, request: exec_pb2.ListTasksRequest,
                  context: grpc.ServicerContext) -> exec_pb2.ListTasksResponse:
        with grpcerr.handle(context):
            tasks = []
            for cid in self.runtime.list():
                try:
                    tasks.append(self._task(cid))
                except errors.NotFound:
                    continue  # deleted meanwhile
            return exec_pb2.ListTasksResponse(tasks=tasks)

    def KillTask(self, request: exec_pb2.KillTaskRequest,
                 context: grpc.ServicerContext) -> exec_pb2.KillTaskResponse:
        with grpcerr.handle(context):
            if not 0 < request.signal < 65:
                raise errors.InvalidArgument(f"invalid signal {request.signal}")
            self.runtime.kill(request.id, request.signal)
            return exec_pb2.KillTaskResponse()

    def WaitTask(self, request: exec_pb2.WaitTaskRequest,
                 context: grpc.ServicerContext) -> exec_pb2.WaitTaskResponse:
        with grpcerr.handle(context):
            remaining = context.time_remaining()
            timeout = None if remaining is None or remaining > 1e8 else max(remaining - 0.05, 0)
            code = self.runtime.wait(request.id, timeout=timeout)
            state = self.runtime.state(request.id)
            if trace.current() is not None:
                self.runtime.trace_exit(request.id, self.tasks.log_path(request.id))
            return exec_pb2.WaitTaskResponse(exit_code=code, oom_killed=state.oom_killed,
                                             finished_at=_ts(state.finished_at))

    def DeleteTask(self, request: exec_pb2.DeleteTaskRequest,
                   context: grpc.ServicerContext) -> exec_pb2.DeleteTaskResponse:
        with grpcerr.handle(context), self.health.quiesce(request.id):  # no probe file appears meanwhile
            self.tasks.delete(request.id, request.force, request.remove_logs)
            return exec_pb2.DeleteTaskResponse()

    def GetTasks(self, request: exec_pb2.GetTasksRequest,
                 context: grpc.ServicerContext) -> exec_pb2.GetTasksResponse:
        with grpcerr.handle(context):
            tasks = []
            for cid in request.ids:
                try:
                    tasks.append(self._task(cid))
                except (errors.NotFound, errors.InvalidArgument):
                    continue  # never started (or not an id)
            return exec_pb2.GetTasksResponse(tasks=tasks)

    def DeleteTasks(self, request: exec_pb2.DeleteTasksRequest,
                    context: grpc.ServicerContext) -> exec_pb2.DeleteTasksResponse:
        with grpcerr.handle(context):
            failed = []
            for i, cid in enumerate(request.ids):
                if i == len(request.ids) // 2:
                    crash_point("execsvc:delete-tasks:mid")
                try:
                    with self.health.quiesce(cid):
                        self.tasks.delete(cid, request.force, request.remove_logs)
                except Exception as e:  # that task's own error; the others go on
                    code, message, reason = itemerr.fields(itemerr.of_exception(e))
                    failed.append(exec_pb2.TaskFailure(id=cid, code=code, message=message, reason=reason))
            return exec_pb2.DeleteTasksResponse(failed=failed)

    def ReadLogs(self, request: exec_pb2.ReadLogsRequest,
                 context: grpc.ServicerContext) -> Iterator[exec_pb2.ReadLogsResponse]:
        with grpcerr.handle(context):
            stop = threading.Event()
            context.add_callback(stop.set)  # the client went away: stop following
            self.runtime.state(request.id)  # NotFound before the stream starts
            wanted = {"stdout"} if request.stdout else set()
            wanted |= {"stderr"} if request.stderr else set()
            wanted = wanted or {"stdout", "stderr"}
            since = request.since.ToNanoseconds() if request.HasField("since") else 0
            tail = request.tail if request.HasField("tail") and request.tail >= 0 else None
            until = request.until.ToNanoseconds() if request.HasField("until") else None
            for entry in self.runtime.logs(request.id, tail=tail, follow=request.follow, stop=stop, until_ns=until,
                                            attach=request.attach):
                if entry.stream not in wanted:
                    continue
                ts = _ts(entry.time)
                if since and ts is not None and ts.ToNanoseconds() < since:
                    continue
                if until is not None and ts is not None and ts.ToNanoseconds() > until:
                    if request.follow:
                        return  # entries come in time order: nothing later can match
                    continue
                yield exec_pb2.ReadLogsResponse(entry=types_pb2.LogEntry(
                    stream=_STREAM.get(entry.stream, types_pb2.LOG_STREAM_UNSPECIFIED), data=entry.data, time=ts))
            if request.follow and not stop.is_set():  # ended at the exit: say how (no WaitTask needed)
                try:
                    st = self.runtime.state(request.id)
                except errors.NotFound:
                    return
                if st.status == "exited" and st.exit_code is not None:
                    context.set_trailing_metadata(((EXIT_CODE_KEY, str(st.exit_code)),
                                                   (OOM_KILLED_KEY, "1" if st.oom_killed else "0")))

    def GetRuntimeInfo(self, request: exec_pb2.GetRuntimeInfoRequest,
                       context: grpc.ServicerContext) -> exec_pb2.GetRuntimeInfoResponse:
        with grpcerr.handle(context):
            running = 0
            for cid in self.runtime.list():
                try:
                    running += self.runtime.state(cid).status == "running"
                except errors.NotFound:
                    continue
            return exec_pb2.GetRuntimeInfoResponse(cgroup_version=f"v{self.runtime.cgroups.version}",
                                                   exec_root=str(self.runtime.exec_root), tasks_running=running)

    def PauseTask(self, request: exec_pb2.PauseTaskRequest,
                  context: grpc.ServicerContext) -> exec_pb2.PauseTaskResponse:
        with grpcerr.handle(context):
            self.lifecycle.pause(request.id)
            return exec_pb2.PauseTaskResponse()

    def ResumeTask(self, request: exec_pb2.ResumeTaskRequest,
                   context: grpc.ServicerContext) -> exec_pb2.ResumeTaskResponse:
        with grpcerr.handle(context):
            self.lifecycle.resume(request.id)
            return exec_pb2.ResumeTaskResponse()

    def UpdateTask(self, request: exec_pb2.UpdateTaskRequest,
                   context: grpc.ServicerContext) -> exec_pb2.UpdateTaskResponse:
        with grpcerr.handle(context):
            self.lifecycle.update(request.id, request.resources)
            return exec_pb2.UpdateTaskResponse()

    def TopTask(self, request: exec_pb2.TopTaskRequest, context: grpc.ServicerContext) -> exec_pb2.TopTaskResponse:
        with grpcerr.handle(context):
            return exec_pb2.TopTaskResponse(processes=self.lifecycle.top(request.id))

    def StatsTask(self, request: exec_pb2.StatsTaskRequest,
                  context: grpc.ServicerContext) -> exec_pb2.StatsTaskResponse:
        with grpcerr.handle(context):
            return exec_pb2.StatsTaskResponse(stats=self.lifecycle.stats(request.id))
