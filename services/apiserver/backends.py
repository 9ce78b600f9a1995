"""What the gateway needs from graphsvc, execsvc and netsvc, and gRPC clients for it.

The domain code (containers, images, system) depends only on these Protocols,
so unit tests run it over in-memory fakes and production over the clients
below. The methods speak the internal proto messages: the gateway's job is to
merge them, not to invent a third model. Every client call has a deadline:
short calls get ``CALL_TIMEOUT``; calls that block until something happens
(wait, follow logs, import) get the caller's remaining time or none, and can be
cancelled when the caller goes away. Failures surface as skiff errors
(``grpcerr.translated``), with the upstream reason unchanged.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from typing import Any, Protocol

import grpc

from skiff.apiserver.callctx import Call
from skiff.apiserver.lifecycle_backend import (
    LifecycleExecBackend,
    LifecycleExecClient,
    LifecycleGraphBackend,
    LifecycleGraphClient,
)
from skiff.apiserver.removal_backend import (
    RemovalExecBackend,
    RemovalExecClient,
    RemovalGraphBackend,
    RemovalGraphClient,
    RemovalNetBackend,
    RemovalNetClient,
)
from skiff.common import errors, grpcerr
from skiff.common.server import CALL_TIMEOUT
from skiff.common.streams import EXIT_CODE_KEY, OOM_KILLED_KEY
from skiff.exec.v1 import exec_pb2, exec_pb2_grpc
from skiff.graph.v1 import graph_pb2, graph_pb2_grpc
from skiff.net.v1 import net_pb2, net_pb2_grpc
from skiff.types.v1 import types_pb2

log = logging.getLogger(__name__)

class LogStream(Protocol):
    """An iterator of log entries that can be cancelled from another thread."""

    def __iter__(self) -> Iterator[types_pb2.LogEntry]: ...

    def __next__(self) -> types_pb2.LogEntry: ...

    def cancel(self) -> None: ...


class GraphBackend(LifecycleGraphBackend, RemovalGraphBackend, Protocol):
    def create_container(self, req: graph_pb2.CreateContainerRequest) -> graph_pb2.CreateContainerResponse: ...

    def get_container(self, ref: str) -> graph_pb2.Container:
        """By id, unique id prefix or name. NotFound / InvalidArgument (ambiguous)."""
        ...

    def list_containers(self, filters: list[types_pb2.Filter] | None = None) -> list[graph_pb2.Container]:
        """All containers, or those the GraphDB filters (name, id, label, ancestor) select."""
        ...

    def list_containers_since(self, since: str) -> tuple[str, list[graph_pb2.Container] | None]:
        """(generation, all containers), or (generation, None) when ``since`` (a generation
        this returned before) is still current; an empty generation is never current."""
        ...

    def get_rootfs(self, container_id: str) -> graph_pb2.GetRootfsResponse: ...

    def delete_container(self, container_id: str, remove_volumes: bool = False) -> None: ...

    def delete_link(self, parent: str, name: str) -> None: ...

    def container_sizes(self, container_ids: list[str]) -> dict[str, tuple[int, int]]:
        """id -> (writable layer bytes, root filesystem bytes)."""
        ...

    def import_image(
        self, requests: Iterator[graph_pb2.ImportImageRequest], call: Call
    ) -> types_pb2.Image: ...

    def list_images(self, req: graph_pb2.ListImagesRequest) -> list[types_pb2.Image]: ...

    def get_image(self, ref: str) -> types_pb2.Image: ...

    def remove_image(self, req: graph_pb2.RemoveImageRequest) -> graph_pb2.RemoveImageResponse: ...

    def get_store_info(self) -> graph_pb2.GetStoreInfoResponse: ...

    def pull_image(self, req: graph_pb2.PullImageRequest, call: Call) -> Iterator[graph_pb2.PullImageResponse]: ...

    def push_image(self, req: graph_pb2.PushImageRequest, call: Call) -> Iterator[graph_pb2.PushImageResponse]: ...

    def tag_image(self, source: str, target: str) -> None: ...


class ExecBackend(LifecycleExecBackend, RemovalExecBackend, Protocol):
    def start_task(self, spec: exec_pb2.TaskSpec) -> exec_pb2.Task: ...

    def get_task(self, task_id: str) -> exec_pb2.Task:
        """NotFound when the container has never been started (or its task was deleted)."""
        ...

    def list_tasks(self) -> list[exec_pb2.Task]: ...

    def kill_task(self, task_id: str, signal: int) -> None: ...

    def wait_task(
        self, task_id: str, timeout: float | None = None, call: Call | None = None
    ) -> exec_pb2.WaitTaskResponse:
        """Block until the task exits. DeadlineExceeded after ``timeout`` (or the
        call's deadline, whichever is sooner); gives up when ``call`` is cancelled."""
        ...

    def delete_task(self, task_id: str, force: bool, remove_logs: bool) -> None: ...

    def read_logs(self, req: exec_pb2.ReadLogsRequest, call: Call | None = None) -> LogStream: ...

    def get_runtime_info(self) -> exec_pb2.GetRuntimeInfoResponse: ...

    def start_exec(self, spec: exec_pb2.ExecSpec) -> None: ...

    def attach_exec(self, task_id: str, exec_id: str, call: Call) -> Iterator[exec_pb2.AttachExecResponse]: ...

    def attach_stdin(self, requests: Iterator[exec_pb2.AttachStdinRequest]) -> Any:
        """Starts AttachStdin over ``requests``; returns a handle whose ``cancel()`` ends it without EOF."""


class NetBackend(RemovalNetBackend, Protocol):
    def create_endpoint(self, container_id: str, network_mode: str,
                        options: net_pb2.CreateEndpointRequest | None = None) -> net_pb2.Endpoint:
        """``options``: hostname, ports, DNS, extra hosts (its id and mode are overwritten)."""
        ...

    def get_endpoint(self, container_id: str) -> net_pb2.Endpoint: ...

    def list_endpoints(self) -> list[net_pb2.Endpoint]: ...

    def delete_endpoint(self, container_id: str, release: bool = False) -> None:
        """``release``: the container stopped (netsvc keeps its network connections for the next start)."""
        ...


def _timeout(call: Call | None, cap: float | None = None) -> float | None:
    return cap if call is None else call.remaining(cap)


def _result(future: Any) -> Any:
    """The future's response; a call cancelled because our caller left becomes an error."""
    try:
        return future.result()
    except grpc.FutureCancelledError:
        raise errors.DeadlineExceeded("the call was cancelled", reason="CANCELLED") from None


class _Stream:
    """A server-streaming call as a cancellable iterator of the responses' ``entry``."""

    def __init__(self, rendezvous: Any):
        self._call = rendezvous

    def __iter__(self) -> Iterator[types_pb2.LogEntry]:
        return self

    def __next__(self) -> types_pb2.LogEntry:
        with grpcerr.translated():
            entry: types_pb2.LogEntry = next(self._call).entry
            return entry

    def cancel(self) -> None:
        self._call.cancel()

    def exit_status(self) -> exec_pb2.WaitTaskResponse | None:
        """Once a follow has ended: the task's exit, when execsvc sent it (trailing metadata)."""
        try:
            md = dict(self._call.trailing_metadata() or ())
            return exec_pb2.WaitTaskResponse(exit_code=int(md[EXIT_CODE_KEY]),
                                             oom_killed=md.get(OOM_KILLED_KEY) == "1")
        except (KeyError, ValueError, grpc.RpcError):
            return None


class GraphClient(LifecycleGraphClient, RemovalGraphClient):
    """GraphBackend over graphsvc's ImageService and ContainerGraphService."""

    def __init__(self, channel: grpc.Channel):
        self._images = graph_pb2_grpc.ImageServiceStub(channel)
        self._containers = graph_pb2_grpc.ContainerGraphServiceStub(channel)

    def create_container(self, req: graph_pb2.CreateContainerRequest) -> graph_pb2.CreateContainerResponse:
        with grpcerr.translated():
            resp: graph_pb2.CreateContainerResponse = self._containers.CreateContainer(
                req, timeout=CALL_TIMEOUT
            )
            return resp

    def get_container(self, ref: str) -> graph_pb2.Container:
        with grpcerr.translated():
            resp = self._containers.GetContainer(
                graph_pb2.GetContainerRequest(container=ref), timeout=CALL_TIMEOUT
            )
            return resp.container  # type: ignore[no-any-return]

    def list_containers(self, filters: list[types_pb2.Filter] | None = None) -> list[graph_pb2.Container]:
        with grpcerr.translated():
            resp = self._containers.ListContainers(graph_pb2.ListContainersRequest(filters=filters or []),
                                                   timeout=CALL_TIMEOUT)
            return list(resp.containers)

    def list_containers_since(self, since: str) -> tuple[str, list[graph_pb2.Container] | None]:
        with grpcerr.translated():
            resp = self._containers.ListContainers(graph_pb2.ListContainersRequest(if_changed_since=since),
                                                   timeout=CALL_TIMEOUT)
            return resp.generation, None if resp.unchanged else list(resp.containers)

    def delete_link(self, parent: str, name: str) -> None:
        with grpcerr.translated():
            self._containers.DeleteLink(graph_pb2.DeleteLinkRequest(parent=parent, name=name), timeout=CALL_TIMEOUT)

    def container_sizes(self, container_ids: list[str]) -> dict[str, tuple[int, int]]:
        with grpcerr.translated():
            resp = self._containers.GetContainerSizes(
                graph_pb2.GetContainerSizesRequest(containers=container_ids), timeout=None)
            return {s.container_id: (s.size_rw, s.size_root_fs) for s in resp.sizes}

    def get_rootfs(self, container_id: str) -> graph_pb2.GetRootfsResponse:
        with grpcerr.translated():
            resp: graph_pb2.GetRootfsResponse = self._containers.GetRootfs(
                graph_pb2.GetRootfsRequest(container_id=container_id), timeout=CALL_TIMEOUT
            )
            return resp

    def delete_container(self, container_id: str, remove_volumes: bool = False) -> None:
        # force: as in Docker, links from other containers go with it (they never block a removal).
        with grpcerr.translated():
            self._containers.DeleteContainer(
                graph_pb2.DeleteContainerRequest(container_id=container_id, force=True, remove_volumes=remove_volumes),
                timeout=CALL_TIMEOUT,
            )

    def import_image(self, requests: Iterator[graph_pb2.ImportImageRequest], call: Call) -> types_pb2.Image:
        # The request iterator is consumed by grpc as it sends: the tarball is never
        # held in memory as a whole. Its length is the caller's, so is its deadline.
        with grpcerr.translated():
            future = self._images.ImportImage.future(requests, timeout=call.remaining())
            call.on_cancel(future.cancel)
            return _result(future).image  # type: ignore[no-any-return]

    def list_images(self, req: graph_pb2.ListImagesRequest) -> list[types_pb2.Image]:
        with grpcerr.translated():
            return list(self._images.ListImages(req, timeout=CALL_TIMEOUT).images)

    def get_image(self, ref: str) -> types_pb2.Image:
        with grpcerr.translated():
            resp = self._images.GetImage(graph_pb2.GetImageRequest(image=ref), timeout=CALL_TIMEOUT)
            return resp.image  # type: ignore[no-any-return]

    def remove_image(self, req: graph_pb2.RemoveImageRequest) -> graph_pb2.RemoveImageResponse:
        with grpcerr.translated():
            resp: graph_pb2.RemoveImageResponse = self._images.RemoveImage(req, timeout=CALL_TIMEOUT)
            return resp

    def get_store_info(self) -> graph_pb2.GetStoreInfoResponse:
        with grpcerr.translated():
            resp: graph_pb2.GetStoreInfoResponse = self._images.GetStoreInfo(
                graph_pb2.GetStoreInfoRequest(), timeout=CALL_TIMEOUT
            )
            return resp

    def _relay(self, rendezvous: Any, call: Call, what: str = "") -> Iterator[Any]:
        """A server stream passed on message by message; our caller leaving cancels it.

        A stream that breaks without an error of graphsvc's own (no ErrorInfo: graphsvc died
        and is being restarted) is reported as UNAVAILABLE saying so, for ``what``.
        """
        call.on_cancel(rendezvous.cancel)
        try:
            yield from rendezvous
        except grpc.RpcError as err:
            translated = grpcerr.from_rpc_error(err)
            trailers = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
            own = any(key == "grpc-status-details-bin" for key, _ in (trailers or ()))
            if what and not own and err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN,
                                                   grpc.StatusCode.INTERNAL):
                raise errors.Unavailable(
                    f"the image service (graphsvc) stopped in the middle of the {what} ({translated.message}); "
                    f"it is restarted and keeps nothing half-done: run the {what} again",
                    reason="SERVICE_UNAVAILABLE") from None
            raise translated from None

    def pull_image(self, req: graph_pb2.PullImageRequest, call: Call) -> Iterator[graph_pb2.PullImageResponse]:
        return self._relay(self._images.PullImage(req, timeout=call.remaining()), call, "pull")

    def push_image(self, req: graph_pb2.PushImageRequest, call: Call) -> Iterator[graph_pb2.PushImageResponse]:
        return self._relay(self._images.PushImage(req, timeout=call.remaining()), call, "push")

    def tag_image(self, source: str, target: str) -> None:
        with grpcerr.translated():
            self._images.TagImage(graph_pb2.TagImageRequest(source=source, target=target), timeout=CALL_TIMEOUT)


class ExecClient(LifecycleExecClient, RemovalExecClient):
    """ExecBackend over execsvc's ExecService."""

    def __init__(self, channel: grpc.Channel):
        self._stub = exec_pb2_grpc.ExecServiceStub(channel)

    def start_task(self, spec: exec_pb2.TaskSpec) -> exec_pb2.Task:
        with grpcerr.translated():
            resp = self._stub.StartTask(exec_pb2.StartTaskRequest(spec=spec), timeout=CALL_TIMEOUT)
            return resp.task  # type: ignore[no-any-return]

    def watch_tasks(self) -> Any:
        """execsvc's WatchTasks stream (iterate it; ``cancel()`` ends it); errors are grpc's own."""
        return self._stub.WatchTasks(exec_pb2.WatchTasksRequest(), wait_for_ready=True)

    def get_task(self, task_id: str) -> exec_pb2.Task:
        with grpcerr.translated():
            resp = self._stub.GetTask(exec_pb2.GetTaskRequest(id=task_id), timeout=CALL_TIMEOUT)
            return resp.task  # type: ignore[no-any-return]

    def list_tasks(self) -> list[exec_pb2.Task]:
        with grpcerr.translated():
            return list(self._stub.ListTasks(exec_pb2.ListTasksRequest(), timeout=CALL_TIMEOUT).tasks)

    def kill_task(self, task_id: str, signal: int) -> None:
        with grpcerr.translated():
            self._stub.KillTask(exec_pb2.KillTaskRequest(id=task_id, signal=signal), timeout=CALL_TIMEOUT)

    def wait_task(
        self, task_id: str, timeout: float | None = None, call: Call | None = None
    ) -> exec_pb2.WaitTaskResponse:
        with grpcerr.translated():
            future = self._stub.WaitTask.future(
                exec_pb2.WaitTaskRequest(id=task_id), timeout=_timeout(call, timeout)
            )
            if call is not None:
                call.on_cancel(future.cancel)
            return _result(future)  # type: ignore[no-any-return]

    def delete_task(self, task_id: str, force: bool, remove_logs: bool) -> None:
        with grpcerr.translated():
            self._stub.DeleteTask(
                exec_pb2.DeleteTaskRequest(id=task_id, force=force, remove_logs=remove_logs),
                timeout=CALL_TIMEOUT,
            )

    def read_logs(self, req: exec_pb2.ReadLogsRequest, call: Call | None = None) -> LogStream:
        # Without follow the stream is short; with follow it lasts as long as the caller.
        stream = _Stream(self._stub.ReadLogs(req, timeout=_timeout(call, None if req.follow else CALL_TIMEOUT)))
        if call is not None:
            call.on_cancel(stream.cancel)
        return stream

    def start_exec(self, spec: exec_pb2.ExecSpec) -> None:
        with grpcerr.translated():
            self._stub.StartExec(exec_pb2.StartExecRequest(spec=spec), timeout=CALL_TIMEOUT)

    def attach_exec(self, task_id: str, exec_id: str, call: Call) -> Iterator[exec_pb2.AttachExecResponse]:
        rendezvous = self._stub.AttachExec(exec_pb2.AttachExecRequest(task_id=task_id, exec_id=exec_id),
                                           timeout=_timeout(call))
        call.on_cancel(rendezvous.cancel)
        try:
            with grpcerr.translated():
                yield from rendezvous
        finally:
            rendezvous.cancel()

    def attach_stdin(self, requests: Iterator[exec_pb2.AttachStdinRequest]) -> Any:
        future = self._stub.AttachStdin.future(requests)

        def done(f: Any) -> None:
            if not f.cancelled() and f.exception() is not None:
                log.info("AttachStdin ended: %s", f.exception())

        future.add_done_callback(done)
        return future

    def get_runtime_info(self) -> exec_pb2.GetRuntimeInfoResponse:
        with grpcerr.translated():
            resp: exec_pb2.GetRuntimeInfoResponse = self._stub.GetRuntimeInfo(
                exec_pb2.GetRuntimeInfoRequest(), timeout=CALL_TIMEOUT
            )
            return resp

    # --- cp (skiff.apiserver.copy) ---

    def stat_path(self, root: exec_pb2.ContainerRoot, path: str) -> types_pb2.PathStat:
        with grpcerr.translated():
            resp = self._stub.StatPath(exec_pb2.StatPathRequest(root=root, path=path), timeout=CALL_TIMEOUT)
            return resp.stat  # type: ignore[no-any-return]

    def copy_out(self, root: exec_pb2.ContainerRoot, path: str, call: Call) -> Iterator[exec_pb2.CopyOutResponse]:
        rendezvous = self._stub.CopyOut(exec_pb2.CopyOutRequest(root=root, path=path), timeout=_timeout(call))
        call.on_cancel(rendezvous.cancel)
        try:
            with grpcerr.translated():
                yield from rendezvous
        finally:
            rendezvous.cancel()

    def copy_in(self, options: exec_pb2.CopyInOptions, chunks: Iterator[bytes], call: Call) -> None:
        requests = itertools.chain([exec_pb2.CopyInRequest(options=options)],
                                   (exec_pb2.CopyInRequest(chunk=c) for c in chunks))
        with grpcerr.translated():
            future = self._stub.CopyIn.future(requests, timeout=_timeout(call))
            call.on_cancel(future.cancel)
            _result(future)


class NetClient(RemovalNetClient):
    """NetBackend over netsvc's NetworkService."""

    def __init__(self, channel: grpc.Channel):
        self._stub = net_pb2_grpc.NetworkServiceStub(channel)

    def create_endpoint(self, container_id: str, network_mode: str,
                        options: net_pb2.CreateEndpointRequest | None = None) -> net_pb2.Endpoint:
        req = net_pb2.CreateEndpointRequest()
        if options is not None:
            req.CopyFrom(options)
        req.container_id, req.network_mode = container_id, network_mode
        with grpcerr.translated():
            resp = self._stub.CreateEndpoint(req, timeout=CALL_TIMEOUT)
            return resp.endpoint  # type: ignore[no-any-return]

    def get_endpoint(self, container_id: str) -> net_pb2.Endpoint:
        with grpcerr.translated():
            resp = self._stub.GetEndpoint(
                net_pb2.GetEndpointRequest(container_id=container_id), timeout=CALL_TIMEOUT
            )
            return resp.endpoint  # type: ignore[no-any-return]

    def list_endpoints(self) -> list[net_pb2.Endpoint]:
        with grpcerr.translated():
            return list(self._stub.ListEndpoints(net_pb2.ListEndpointsRequest(), timeout=CALL_TIMEOUT).endpoints)

    def network_call(self, method: str, request: Any) -> Any:
        """A network RPC of netsvc by name (skiff.apiserver.networks: CreateNetwork, ...)."""
        with grpcerr.translated():
            return getattr(self._stub, method)(request, timeout=CALL_TIMEOUT)

    def delete_endpoint(self, container_id: str, release: bool = False) -> None:
        with grpcerr.translated():
            self._stub.DeleteEndpoint(
                net_pb2.DeleteEndpointRequest(container_id=container_id, release=release), timeout=CALL_TIMEOUT
            )
