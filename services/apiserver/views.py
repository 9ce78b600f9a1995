"""The public view of a container: a GraphDB record merged with its task and endpoint.

Kept apart from the orchestration so that list and inspect build the same
view, and so the merge can be tested without any backend.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from skiff.api.v1 import api_pb2
from skiff.common.errors import UNSUPPORTED_FILTER, InvalidArgument
from skiff.exec.v1 import exec_pb2
from skiff.graph.v1 import graph_pb2
from skiff.net.v1 import net_pb2
from skiff.types.v1 import types_pb2

Status = types_pb2.ContainerStatus
HealthStatus = types_pb2.HealthStatus
#: States in which the container has live processes (it must be stopped before removal).
LIVE = frozenset({Status.CONTAINER_STATUS_RUNNING, Status.CONTAINER_STATUS_PAUSED,
                  Status.CONTAINER_STATUS_RESTARTING})
_PREFIX = "CONTAINER_STATUS_"
#: Docker's status words (``--filter status=exited``) to the enum.
STATUS_WORDS = {
    name[len(_PREFIX):].lower(): value
    for name, value in types_pb2.ContainerStatus.items()
    if name != "CONTAINER_STATUS_UNSPECIFIED"
}


def is_live(task: exec_pb2.Task | None) -> bool:
    return task is not None and task.state.status in LIVE


def restarting(record: graph_pb2.Container, task: exec_pb2.Task | None) -> bool:
    """The container waits for a restart its policy decided on (Docker's ``restarting`` state)."""
    st = record.restart_state
    return (st.pending and task is not None and not is_live(task)
            and task.state.started_at == st.handled_started_at)


def state_of(task: exec_pb2.Task | None) -> types_pb2.ContainerState:
    """A task's state; a container that never ran (no task) is CREATED."""
    if task is None:
        return types_pb2.ContainerState(status=Status.CONTAINER_STATUS_CREATED)
    return task.state


def container_view(
    record: graph_pb2.Container,
    task: exec_pb2.Task | None,
    endpoint: net_pb2.Endpoint | None,
    rootfs: types_pb2.Mount | None = None,
) -> api_pb2.Container:
    settings = api_pb2.NetworkSettings(network_mode=record.host_config.network_mode)
    if endpoint is not None:
        settings.network_mode = endpoint.network_mode or settings.network_mode
        settings.sandbox_key = endpoint.netns_path
        settings.ip_address = endpoint.ip_address
        settings.ip_prefix_len = endpoint.prefix_length
        settings.gateway = endpoint.gateway
        settings.mac_address = endpoint.mac_address
        settings.bridge = endpoint.bridge
        settings.ports.extend(endpoint.ports)
        settings.global_ipv6_address = endpoint.ipv6_address
        settings.global_ipv6_prefix_len = endpoint.ipv6_prefix_length
        settings.ipv6_gateway = endpoint.ipv6_gateway
    view = api_pb2.Container(
        id=record.id,
        name=record.name,
        image=record.config.image,
        image_id=record.image_id,
        created=record.created,
        path=record.path,
        args=record.args,
        config=record.config,
        host_config=record.host_config,
        state=state_of(task),
        network_settings=settings,
        links=record.links,
        # no log file with `--log-driver none` (Docker shows an empty LogPath)
        log_path=task.log_path if task is not None and record.host_config.log_config.type != "none" else "",
        mounts=record.mounts,
    )
    if rootfs is not None:
        view.rootfs.CopyFrom(rootfs)
    view.restart_count = record.restart_state.restart_count
    if restarting(record, task):
        view.state.status = Status.CONTAINER_STATUS_RESTARTING
    return view


def _status_match(words: list[str]) -> Callable[[api_pb2.Container], bool]:
    wanted = set()
    for word in words:
        if word not in STATUS_WORDS:
            raise InvalidArgument(
                f"invalid filter 'status={word}': use one of {', '.join(sorted(STATUS_WORDS))}"
            )
        wanted.add(STATUS_WORDS[word])
    return lambda c: c.state.status in wanted


def _name_match(patterns: list[str]) -> Callable[[api_pb2.Container], bool]:
    try:
        compiled = [re.compile(p) for p in patterns]
    except re.error as err:
        raise InvalidArgument(f"invalid filter 'name': {err}") from None
    return lambda c: any(p.search(c.name) for p in compiled)


def _id_match(prefixes: list[str]) -> Callable[[api_pb2.Container], bool]:
    return lambda c: any(c.id.startswith(p) for p in prefixes)


def _exited_match(codes: list[str]) -> Callable[[api_pb2.Container], bool]:
    try:
        wanted = {int(c) for c in codes}
    except ValueError:
        raise InvalidArgument(f"invalid filter 'exited={','.join(codes)}': want an exit code") from None
    return lambda c: c.state.status == Status.CONTAINER_STATUS_EXITED and c.state.exit_code in wanted


#: Docker's ``ps --filter health=``: ``none`` is a container without a health check.
HEALTH_WORDS = {"starting": HealthStatus.HEALTH_STATUS_STARTING, "healthy": HealthStatus.HEALTH_STATUS_HEALTHY,
                "unhealthy": HealthStatus.HEALTH_STATUS_UNHEALTHY, "none": HealthStatus.HEALTH_STATUS_UNSPECIFIED}


def _health_match(words: list[str]) -> Callable[[api_pb2.Container], bool]:
    for word in words:
        if word not in HEALTH_WORDS:
            raise InvalidArgument(f"invalid filter 'health={word}': use one of {', '.join(sorted(HEALTH_WORDS))}")
    wanted = {HEALTH_WORDS[w] for w in words}
    return lambda c: (c.state.health.status if c.state.HasField("health") else 0) in wanted


_FILTERS = {"status": _status_match, "name": _name_match, "id": _id_match, "exited": _exited_match,
            "health": _health_match}
#: ``ps --filter`` keys answered by graphsvc from the GraphDB (before any task is looked at).
GRAPH_FILTERS = ("name", "id", "label", "ancestor")


def split_filters(filters: Iterable[types_pb2.Filter]) -> tuple[list[types_pb2.Filter], list[types_pb2.Filter]]:
    """(filters for the GraphDB, filters on the task state); unknown keys are INVALID_ARGUMENT."""
    graph, state = [], []
    for f in filters:
        if f.key in GRAPH_FILTERS:
            graph.append(f)
        elif f.key in _FILTERS:
            state.append(f)
        else:
            keys = sorted({*GRAPH_FILTERS, *_FILTERS})
            raise InvalidArgument(f"unsupported filter {f.key!r}: use one of {', '.join(keys)}",
                                  reason=UNSUPPORTED_FILTER)
    return graph, state


def compile_filters(filters: Iterable[types_pb2.Filter]) -> Callable[[api_pb2.Container], bool]:
    """One predicate for all filters: values of one key are OR-ed, keys are AND-ed."""
    by_key: dict[str, list[str]] = {}
    for f in filters:
        if f.key not in _FILTERS:
            raise InvalidArgument(
                f"unsupported filter {f.key!r}: use one of {', '.join(sorted(_FILTERS))}",
                reason=UNSUPPORTED_FILTER,
            )
        by_key.setdefault(f.key, []).append(f.value)
    tests = [_FILTERS[key](values) for key, values in by_key.items()]
    return lambda c: all(test(c) for test in tests)
