"""Version and info: facts about the engine (from the backends) and the host (from here).

The host facts are read where the gateway runs, which is the engine's host:
every service shares one machine.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path

from skiff.api.v1 import api_pb2
from skiff.apiserver.backends import ExecBackend, GraphBackend
from skiff.common import errors, trace
from skiff.types.v1 import types_pb2

API_VERSION = "v1"
_Status = types_pb2.ContainerStatus


def engine_version() -> str:
    try:
        return importlib.metadata.version("skiff")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0+unknown"


def _memory_bytes(meminfo: Path = Path("/proc/meminfo")) -> int:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024  # the kernel's "kB" is KiB
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _operating_system(os_release: Path = Path("/etc/os-release")) -> str:
    try:
        for line in os_release.read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return os.uname().sysname


class System:
    def __init__(self, graph: GraphBackend, exec_: ExecBackend, data_root: str = "", exec_root: str = "",
                 traces: trace.Store | None = None):
        self._graph = graph
        self._exec = exec_
        self._data_root = data_root
        self._exec_root = exec_root
        self._traces = traces

    def trace(self, trace_id: str) -> api_pb2.GetTraceResponse:
        found = self._traces.get(trace_id) if self._traces is not None and trace_id else None
        if found is None:
            raise errors.NotFound(f"no trace {trace_id!r}: unknown, or forgotten"
                                  f" (the last {trace.MAX_TRACES} are kept)")
        return api_pb2.GetTraceResponse(spans=[
            api_pb2.TraceSpan(service=s.service, name=s.name, start_unix_nanos=s.start_ns, duration_nanos=s.duration_ns)
            for s in found.spans()
        ])

    def version(self) -> api_pb2.GetVersionResponse:
        uname = os.uname()
        return api_pb2.GetVersionResponse(
            version=engine_version(),
            api_version=API_VERSION,
            os=uname.sysname.lower(),
            arch=uname.machine,
            kernel_version=uname.release,
            runtime_version=f"{platform.python_implementation()} {platform.python_version()}",
        )

    def info(self) -> api_pb2.GetInfoResponse:
        store = self._graph.get_store_info()
        runtime = self._exec.get_runtime_info()
        statuses = [t.state.status for t in self._exec.list_tasks()]
        running = sum(
            1 for s in statuses if s in (_Status.CONTAINER_STATUS_RUNNING, _Status.CONTAINER_STATUS_RESTARTING)
        )
        paused = sum(1 for s in statuses if s == _Status.CONTAINER_STATUS_PAUSED)
        uname = os.uname()
        return api_pb2.GetInfoResponse(
            containers=store.containers,
            containers_running=running,
            containers_paused=paused,
            containers_stopped=max(store.containers - running - paused, 0),
            images=store.images,
            storage_driver=store.storage_driver,
            cgroup_version=runtime.cgroup_version,
            data_root=store.data_root or self._data_root,
            exec_root=runtime.exec_root or self._exec_root,
            kernel_version=uname.release,
            operating_system=_operating_system(),
            cpus=os.cpu_count() or 0,
            memory_bytes=_memory_bytes(),
            name=uname.nodename,
            server_version=engine_version(),
        )
