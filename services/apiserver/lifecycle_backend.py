"""The backend calls of the lifecycle commands (pause, update, top, stats, rename).

The Protocols are mixed into ``backends.ExecBackend`` / ``GraphBackend`` and
the client mix-ins into ``ExecClient`` / ``GraphClient``, so the lifecycle
calls live here and not in the shared backends module.
"""

from __future__ import annotations

from typing import Any, Protocol

from skiff.common import grpcerr
from skiff.common.server import CALL_TIMEOUT
from skiff.exec.v1 import exec_pb2
from skiff.graph.v1 import graph_pb2
from skiff.types.v1 import types_pb2


class LifecycleExecBackend(Protocol):
    def pause_task(self, task_id: str) -> None: ...

    def resume_task(self, task_id: str) -> None: ...

    def update_task(self, task_id: str, resources: exec_pb2.TaskSpec) -> None: ...

    def top_task(self, task_id: str) -> types_pb2.ProcessList: ...

    def stats_task(self, task_id: str) -> types_pb2.ContainerStats: ...


class LifecycleGraphBackend(Protocol):
    def rename_container(self, ref: str, new_name: str) -> None:
        """NotFound, Conflict (NAME_IN_USE), InvalidArgument (INVALID_NAME)."""
        ...

    def update_host_config(self, container_id: str, host_config: types_pb2.HostConfig) -> None: ...

    def set_restart_state(self, container_id: str, state: graph_pb2.RestartState) -> None: ...


class LifecycleExecClient:
    """Mixed into ExecClient (``_stub``: an ExecServiceStub)."""

    _stub: Any

    def pause_task(self, task_id: str) -> None:
        with grpcerr.translated():
            self._stub.PauseTask(exec_pb2.PauseTaskRequest(id=task_id), timeout=CALL_TIMEOUT)

    def resume_task(self, task_id: str) -> None:
        with grpcerr.translated():
            self._stub.ResumeTask(exec_pb2.ResumeTaskRequest(id=task_id), timeout=CALL_TIMEOUT)

    def update_task(self, task_id: str, resources: exec_pb2.TaskSpec) -> None:
        with grpcerr.translated():
            self._stub.UpdateTask(exec_pb2.UpdateTaskRequest(id=task_id, resources=resources), timeout=CALL_TIMEOUT)

    def top_task(self, task_id: str) -> types_pb2.ProcessList:
        with grpcerr.translated():
            resp = self._stub.TopTask(exec_pb2.TopTaskRequest(id=task_id), timeout=CALL_TIMEOUT)
            return resp.processes  # type: ignore[no-any-return]

    def stats_task(self, task_id: str) -> types_pb2.ContainerStats:
        with grpcerr.translated():
            resp = self._stub.StatsTask(exec_pb2.StatsTaskRequest(id=task_id), timeout=CALL_TIMEOUT)
            return resp.stats  # type: ignore[no-any-return]


class LifecycleGraphClient:
    """Mixed into GraphClient (``_containers``: a ContainerGraphServiceStub)."""

    _containers: Any

    def rename_container(self, ref: str, new_name: str) -> None:
        with grpcerr.translated():
            self._containers.RenameContainer(
                graph_pb2.RenameContainerRequest(container=ref, new_name=new_name), timeout=CALL_TIMEOUT)

    def update_host_config(self, container_id: str, host_config: types_pb2.HostConfig) -> None:
        with grpcerr.translated():
            self._containers.UpdateHostConfig(
                graph_pb2.UpdateHostConfigRequest(container_id=container_id, host_config=host_config),
                timeout=CALL_TIMEOUT)

    def set_restart_state(self, container_id: str, state: graph_pb2.RestartState) -> None:
        with grpcerr.translated():
            self._containers.SetRestartState(
                graph_pb2.SetRestartStateRequest(container_id=container_id, restart_state=state),
                timeout=CALL_TIMEOUT)
