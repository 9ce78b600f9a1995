"""Lifecycle calls of the public API: pause, unpause, update, top, stats, restart, rename.

Each resolves the container in the GraphDB, checks its state the way Docker
does (with Docker's messages) and makes one execsvc or graphsvc call.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from skiff.api.v1 import api_pb2
from skiff.apiserver import events, hostopts
from skiff.apiserver.backends import ExecBackend, GraphBackend
from skiff.apiserver.callctx import Call
from skiff.apiserver.containers import Containers
from skiff.apiserver.views import Status, is_live
from skiff.common import errors, grpcerr
from skiff.exec.v1 import exec_pb2
from skiff.types.v1 import types_pb2

#: Seconds between two samples of a stats stream (and of the pair a one-shot read takes).
STATS_INTERVAL = 1.0
ONE_SHOT_INTERVAL = 0.5


class Lifecycle:
    def __init__(self, containers: Containers):
        self._containers = containers
        self._graph: GraphBackend = containers._graph
        self._exec: ExecBackend = containers._exec

    @classmethod
    def of(cls, containers: Containers) -> Lifecycle:
        """The one Lifecycle of ``containers`` (made on first use)."""
        found = getattr(containers, "_lifecycle", None)
        if found is None:
            found = cls(containers)
            containers._lifecycle = found  # type: ignore[attr-defined]
        return found  # type: ignore[no-any-return]

    def _status(self, container_id: str) -> int:
        try:
            return int(self._exec.get_task(container_id).state.status)
        except errors.NotFound:
            return Status.CONTAINER_STATUS_CREATED

    def _running_id(self, ref: str) -> str:
        record = self._graph.get_container(ref)
        if self._status(record.id) not in (Status.CONTAINER_STATUS_RUNNING, Status.CONTAINER_STATUS_PAUSED):
            raise errors.FailedPrecondition(f"Container {record.id} is not running",
                                            reason=errors.CONTAINER_NOT_RUNNING)
        return str(record.id)

    def pause(self, ref: str) -> None:
        cid = self._running_id(ref)
        if self._status(cid) == Status.CONTAINER_STATUS_PAUSED:
            raise errors.FailedPrecondition(f"Container {cid} is already paused", reason="CONTAINER_PAUSED")
        self._exec.pause_task(cid)
        events.container(cid, "pause")

    def unpause(self, ref: str) -> None:
        record = self._graph.get_container(ref)
        if self._status(record.id) != Status.CONTAINER_STATUS_PAUSED:
            raise errors.FailedPrecondition(f"Container {record.id} is not paused", reason="CONTAINER_NOT_PAUSED")
        self._exec.resume_task(record.id)
        events.container(record, "unpause")

    def update(self, ref: str, hc: types_pb2.HostConfig) -> list[str]:
        """Stores the new limits and restart policy with the record, then applies the limits to the
        task (running or stopped); if the task refuses them, the record is put back."""
        record = self._graph.get_container(ref)
        merged = types_pb2.HostConfig()
        merged.CopyFrom(record.host_config)
        for field in ("memory_bytes", "memory_swap", "memory_reservation", "pids_limit", "nano_cpus",
                      "cpu_shares", "cpuset_cpus", "blkio_weight"):
            if getattr(hc, field):
                setattr(merged, field, getattr(hc, field))
        if merged.pids_limit < 0:
            merged.pids_limit = 0  # -1: unlimited, stored as 0 (as at create)
        new_policy = hc.HasField("restart_policy") and bool(hc.restart_policy.name)
        if new_policy:
            if record.host_config.auto_remove and hc.restart_policy.name != "no":
                raise errors.InvalidArgument(
                    "Restart policy cannot be updated because AutoRemove is enabled for the container")
            merged.restart_policy.CopyFrom(hc.restart_policy)
        hostopts.validate(merged)
        old = types_pb2.HostConfig()
        old.CopyFrom(record.host_config)
        self._graph.update_host_config(record.id, merged)
        spec = exec_pb2.TaskSpec(memory_bytes=hc.memory_bytes, pids_limit=hc.pids_limit)
        hostopts.resources(hc, spec)
        try:
            self._exec.update_task(record.id, spec)
        except errors.NotFound:
            pass  # never started: the record is what the first start reads
        except errors.SkiffError:
            self._graph.update_host_config(record.id, old)
            raise
        if new_policy:
            self._containers.restarts.policy_changed(record.id)
        events.container(record, "update")
        return []

    def top(self, ref: str) -> types_pb2.ProcessList:
        cid = self._running_id(ref)
        return self._exec.top_task(cid)

    def stats(self, ref: str, stream: bool, call: Call) -> Iterator[types_pb2.ContainerStats]:
        record = self._graph.get_container(ref)
        name = record.name.lstrip("/")
        prev: types_pb2.ContainerStats | None = None
        while True:
            s = self._sample(record.id)
            s.name = name
            if prev is not None:
                s.pre_cpu_usage_ns, s.pre_system_cpu_usage_ns = prev.cpu_usage_ns, prev.system_cpu_usage_ns
            if stream or prev is not None:
                yield s
                if not stream:
                    return
            prev = s
            if not call.sleep(STATS_INTERVAL if stream else ONE_SHOT_INTERVAL):
                return

    def _sample(self, cid: str) -> types_pb2.ContainerStats:
        try:
            return self._exec.stats_task(cid)
        except errors.NotFound:
            return types_pb2.ContainerStats(id=cid)

    def restart(self, ref: str, timeout: int | None) -> None:
        record = self._graph.get_container(ref)
        if is_live(self._containers._task(record.id)):
            self._containers.stop(record.id, timeout, "")
        self._containers.start(record.id)
        events.container(record, "restart")

    def rename(self, ref: str, new_name: str) -> None:
        if not new_name.strip("/"):
            raise errors.InvalidArgument("Neither old nor new names may be empty", reason=errors.INVALID_NAME)
        record = self._graph.get_container(ref)
        self._graph.rename_container(ref, new_name.lstrip("/"))
        events.renamed(record, new_name.lstrip("/"))


class LifecycleRPCs:
    """ContainerService's lifecycle RPCs, mixed into ContainerServicer (``_containers``)."""

    _containers: Containers

    def _lc(self) -> Lifecycle:
        return Lifecycle.of(self._containers)

    def PauseContainer(self, request: api_pb2.PauseContainerRequest,
                       context: grpc.ServicerContext) -> api_pb2.PauseContainerResponse:
        with grpcerr.handle(context):
            self._lc().pause(request.container)
        return api_pb2.PauseContainerResponse()

    def UnpauseContainer(self, request: api_pb2.UnpauseContainerRequest,
                         context: grpc.ServicerContext) -> api_pb2.UnpauseContainerResponse:
        with grpcerr.handle(context):
            self._lc().unpause(request.container)
        return api_pb2.UnpauseContainerResponse()

    def UpdateContainer(self, request: api_pb2.UpdateContainerRequest,
                        context: grpc.ServicerContext) -> api_pb2.UpdateContainerResponse:
        with grpcerr.handle(context):
            return api_pb2.UpdateContainerResponse(
                warnings=self._lc().update(request.container, request.host_config))
        raise AssertionError("unreachable: handle() aborts the call")

    def TopContainer(self, request: api_pb2.TopContainerRequest,
                     context: grpc.ServicerContext) -> api_pb2.TopContainerResponse:
        with grpcerr.handle(context):
            return api_pb2.TopContainerResponse(processes=self._lc().top(request.container))
        raise AssertionError("unreachable: handle() aborts the call")

    def ContainerStats(self, request: api_pb2.ContainerStatsRequest,
                       context: grpc.ServicerContext) -> Iterator[api_pb2.ContainerStatsResponse]:
        with grpcerr.handle(context):
            for s in self._lc().stats(request.container, request.stream, Call.from_context(context)):
                yield api_pb2.ContainerStatsResponse(stats=s)

    def RestartContainer(self, request: api_pb2.RestartContainerRequest,
                         context: grpc.ServicerContext) -> api_pb2.RestartContainerResponse:
        timeout = request.timeout_seconds if request.HasField("timeout_seconds") else None
        with grpcerr.handle(context):
            self._lc().restart(request.container, timeout)
        return api_pb2.RestartContainerResponse()

    def RenameContainer(self, request: api_pb2.RenameContainerRequest,
                        context: grpc.ServicerContext) -> api_pb2.RenameContainerResponse:
        with grpcerr.handle(context):
            self._lc().rename(request.container, request.new_name)
        return api_pb2.RenameContainerResponse()
