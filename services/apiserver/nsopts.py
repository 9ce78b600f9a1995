"""Namespace modes of a HostConfig (``--pid``, ``--ipc``, ``--uts``, ``--cgroupns``, ``--userns``), Docker's rules.

Checked at create (syntax, conflicts, the IPC donor exists); at start the IPC donor
``container:<name|id>`` is resolved to its id and must be running with a shareable
IPC namespace (``shareable`` or ``host``), as Docker requires.
"""

from __future__ import annotations

from skiff.apiserver.backends import ExecBackend, GraphBackend
from skiff.common import errors
from skiff.exec.v1 import exec_pb2
from skiff.types.v1 import types_pb2

CONTAINER = "container:"
IPC_MODES = ("", "private", "shareable", "host", "none")


def validate(hc: types_pb2.HostConfig, hostname: str, graph: GraphBackend) -> None:
    """INVALID_ARGUMENT with Docker's message; a ``container:<name>`` IPC mode is stored as ``container:<id>``."""
    if hc.pid_mode not in ("", "host"):
        if hc.pid_mode.startswith(CONTAINER):
            raise errors.InvalidArgument("--pid container:<name|id> is not supported; use host or private")
        raise errors.InvalidArgument(f"invalid PID mode: {hc.pid_mode}")
    if hc.uts_mode not in ("", "host"):
        raise errors.InvalidArgument(f"invalid UTS mode: {hc.uts_mode}")
    if hc.uts_mode == "host" and hostname:
        raise errors.InvalidArgument("Conflicting options: hostname and the UTS mode")
    if hc.userns_mode not in ("", "host"):
        raise errors.InvalidArgument("--userns: invalid USER mode")
    if hc.cgroupns_mode not in ("", "host", "private"):
        raise errors.InvalidArgument(f"invalid cgroup namespace mode: {hc.cgroupns_mode}")
    if hc.ipc_mode.startswith(CONTAINER):
        ref = hc.ipc_mode[len(CONTAINER):]
        if not ref:
            raise errors.InvalidArgument(f"invalid IPC mode: {hc.ipc_mode}")
        try:
            hc.ipc_mode = CONTAINER + graph.get_container(ref).id
        except errors.NotFound:
            raise errors.InvalidArgument(f"No such container: {ref}") from None
    elif hc.ipc_mode not in IPC_MODES:
        raise errors.InvalidArgument(f"invalid IPC mode: {hc.ipc_mode}")
    for d in hc.devices:
        if not d.path_on_host.startswith("/"):
            raise errors.InvalidArgument(f"{d.path_on_host} is not an absolute path")
        if d.path_in_container and not d.path_in_container.startswith("/"):
            raise errors.InvalidArgument(f"{d.path_in_container} is not an absolute path")
        if set(d.cgroup_permissions) - set("rwm"):
            raise errors.InvalidArgument(f"bad mode specified: {d.cgroup_permissions}")
    if hc.ipc_mode in ("host", "none") and hc.shm_size:
        raise errors.InvalidArgument(f"--shm-size cannot be used with --ipc {hc.ipc_mode}")


def fill_task_spec(spec: exec_pb2.TaskSpec, hc: types_pb2.HostConfig, graph: GraphBackend,
                   exec_: ExecBackend) -> None:
    """The namespace fields of ``spec``; FAILED_PRECONDITION when the IPC donor cannot be joined."""
    spec.pid_mode, spec.uts_mode, spec.cgroupns_mode = hc.pid_mode, hc.uts_mode, hc.cgroupns_mode
    spec.ipc_mode = hc.ipc_mode
    spec.userns_mode = hc.userns_mode
    spec.devices.extend(hc.devices)
    if not hc.ipc_mode.startswith(CONTAINER):
        return
    donor_id = hc.ipc_mode[len(CONTAINER):]
    try:
        donor = graph.get_container(donor_id)
        task: exec_pb2.Task | None = exec_.get_task(donor.id)
    except errors.NotFound:
        task = None
    if task is None or task.state.status not in (types_pb2.CONTAINER_STATUS_RUNNING,
                                                 types_pb2.CONTAINER_STATUS_PAUSED):
        raise errors.FailedPrecondition(f"cannot join IPC of a non running container: {donor_id}",
                                        reason=errors.CONTAINER_NOT_RUNNING)
    if donor.host_config.ipc_mode not in ("shareable", "host"):
        raise errors.FailedPrecondition(
            f"container {donor_id}: non-shareable IPC (hint: use IpcMode:shareable for the donor container)")
