"""The backend calls of RemoveContainers (`rm` of many containers in one call).

As in lifecycle_backend.py: the Protocols are mixed into ``backends.GraphBackend`` /
``ExecBackend`` / ``NetBackend`` and the client mix-ins into ``GraphClient`` /
``ExecClient`` / ``NetClient``. Each is one call for the whole batch; a per-item failure
comes back as the skiff error the single call would have raised.
"""

from __future__ import annotations

from typing import Any, Protocol

from skiff.common import errors, grpcerr, itemerr
from skiff.common.server import CALL_TIMEOUT
from skiff.exec.v1 import exec_pb2
from skiff.graph.v1 import graph_pb2
from skiff.net.v1 import net_pb2


class RemovalGraphBackend(Protocol):
    def get_containers(self, refs: list[str]) -> list[graph_pb2.Container | errors.SkiffError]:
        """get_container of each reference, in order: the record, or the error it raised. Only
        id, name, image_id, host_config.restart_policy and restart_state are filled."""
        ...

    def delete_containers(self, container_ids: list[str], remove_volumes: bool = False
                          ) -> dict[str, errors.SkiffError]:
        """The records in one transaction (links go too); the ones not deleted, with why."""
        ...


class RemovalExecBackend(Protocol):
    def get_tasks(self, task_ids: list[str]) -> dict[str, exec_pb2.Task]:
        """The tasks of these containers that have one (never started: none)."""
        ...

    def delete_tasks(self, task_ids: list[str], force: bool, remove_logs: bool) -> dict[str, errors.SkiffError]:
        """The ones not deleted, with why (a missing task is deleted)."""
        ...


class RemovalNetBackend(Protocol):
    def delete_endpoints(self, container_ids: list[str]) -> dict[str, errors.SkiffError]:
        """The ones not deleted, with why (a missing endpoint is deleted)."""
        ...


def _failures(items: Any, key: str) -> dict[str, errors.SkiffError]:
    return {getattr(f, key): itemerr.error(f.code, f.message, f.reason) for f in items}


class RemovalGraphClient:
    _containers: Any  # graph_pb2_grpc.ContainerGraphServiceStub, set by GraphClient

    def get_containers(self, refs: list[str]) -> list[graph_pb2.Container | errors.SkiffError]:
        with grpcerr.translated():
            resp = self._containers.GetContainers(graph_pb2.GetContainersRequest(containers=refs, brief=True),
                                                  timeout=CALL_TIMEOUT)
        return [r.container if r.code == 0 else itemerr.error(r.code, r.message, r.reason) for r in resp.results]

    def delete_containers(self, container_ids: list[str], remove_volumes: bool = False
                          ) -> dict[str, errors.SkiffError]:
        # force: as in Docker, links from other containers go with it (they never block a removal).
        with grpcerr.translated():
            resp = self._containers.DeleteContainers(graph_pb2.DeleteContainersRequest(
                container_ids=container_ids, force=True, remove_volumes=remove_volumes), timeout=CALL_TIMEOUT)
        return _failures(resp.failed, "container_id")


class RemovalExecClient:
    _stub: Any  # exec_pb2_grpc.ExecServiceStub, set by ExecClient

    def get_tasks(self, task_ids: list[str]) -> dict[str, exec_pb2.Task]:
        if not task_ids:
            return {}
        with grpcerr.translated():
            resp = self._stub.GetTasks(exec_pb2.GetTasksRequest(ids=task_ids), timeout=CALL_TIMEOUT)
        return {t.id: t for t in resp.tasks}

    def delete_tasks(self, task_ids: list[str], force: bool, remove_logs: bool) -> dict[str, errors.SkiffError]:
        with grpcerr.translated():
            resp = self._stub.DeleteTasks(exec_pb2.DeleteTasksRequest(
                ids=task_ids, force=force, remove_logs=remove_logs), timeout=CALL_TIMEOUT)
        return _failures(resp.failed, "id")


class RemovalNetClient:
    _stub: Any  # net_pb2_grpc.NetworkServiceStub, set by NetClient

    def delete_endpoints(self, container_ids: list[str]) -> dict[str, errors.SkiffError]:
        with grpcerr.translated():
            resp = self._stub.DeleteEndpoints(net_pb2.DeleteEndpointsRequest(container_ids=container_ids),
                                              timeout=CALL_TIMEOUT)
        return _failures(resp.failed, "container_id")
