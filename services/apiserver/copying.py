"""`skiff cp` through the gateway: StatContainerPath, CopyFromContainer, CopyToContainer.

The gateway names the container's files for execsvc: its id (a running task is
reached through its own root), and for a container that is not running the
root filesystem graphsvc prepared and the mounts graphsvc resolved, which
execsvc mounts privately for the duration of the copy. The archive is relayed
chunk by chunk in both directions, never held whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from skiff.api.v1 import api_pb2
from skiff.apiserver.callctx import Call
from skiff.apiserver.containers import Containers
from skiff.common import errors
from skiff.exec.v1 import exec_pb2


class Copies:
    def __init__(self, graph: Any, exec_: Any):
        self._graph = graph
        self._exec = exec_

    @classmethod
    def of(cls, containers: Containers) -> Copies:
        return cls(containers._graph, containers._exec)

    def _root(self, ref: str) -> exec_pb2.ContainerRoot:
        record = self._graph.get_container(ref)
        rootfs = self._graph.get_rootfs(record.id).rootfs
        return exec_pb2.ContainerRoot(id=record.id, rootfs=rootfs, mounts=record.mounts,
                                      readonly_rootfs=record.host_config.readonly_rootfs)

    def stat(self, req: api_pb2.StatContainerPathRequest) -> api_pb2.StatContainerPathResponse:
        return api_pb2.StatContainerPathResponse(stat=self._exec.stat_path(self._root(req.container), req.path))

    def copy_from(self, req: api_pb2.CopyFromContainerRequest, call: Call
                  ) -> Iterator[api_pb2.CopyFromContainerResponse]:
        for resp in self._exec.copy_out(self._root(req.container), req.path, call):
            if resp.WhichOneof("part") == "stat":
                yield api_pb2.CopyFromContainerResponse(stat=resp.stat)
            else:
                yield api_pb2.CopyFromContainerResponse(chunk=resp.chunk)

    def copy_to(self, requests: Iterator[api_pb2.CopyToContainerRequest], call: Call
                ) -> api_pb2.CopyToContainerResponse:
        first = next(requests, None)
        if first is None or first.WhichOneof("part") != "options":
            raise errors.InvalidArgument("the first CopyToContainer message must carry the options")
        o = first.options
        options = exec_pb2.CopyInOptions(root=self._root(o.container), path=o.path or "/",
                                         copy_uid_gid=o.copy_uid_gid,
                                         no_overwrite_dir_non_dir=o.no_overwrite_dir_non_dir)
        self._exec.copy_in(options, (r.chunk for r in requests if r.WhichOneof("part") == "chunk"), call)
        return api_pb2.CopyToContainerResponse()
