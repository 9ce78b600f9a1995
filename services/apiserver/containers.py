"""Container orchestration: one public container call becomes calls on the three backends.

The gateway keeps no state: a container is its GraphDB record (graphsvc), its
task (execsvc; none until first started, which reads as CREATED) and its
endpoint (netsvc); it keeps only caches (the records of containers it has just
created: fresh.py; the views of the last list). Ordering rules that matter:

* start creates the endpoint before the task and releases it if the task
  cannot start, so a failed start leaves nothing running;
* remove deletes task, then endpoint, then record: any failure leaves the
  record, so the removal can be retried (never a task without a record);
* auto-remove is driven from here (a watcher thread per running auto-remove
  container, and a sweep at start-up because the gateway may have restarted).
  It deletes the record first (then the container is gone from ``ps -a`` and
  its name is free: what ``run --rm`` waits for), then the exited task and the
  endpoint; what a crash leaves of those (no record) the start-up sweep removes.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any, TypeVar, cast

from skiff.api.v1 import api_pb2
from skiff.apiserver import events, hostopts, logopts, networks, nsopts, resume, stdio
from skiff.apiserver.backends import ExecBackend, GraphBackend, LogStream, NetBackend
from skiff.apiserver.callctx import Call
from skiff.apiserver.fresh import FreshRecords
from skiff.apiserver.restarts import Restarter
from skiff.apiserver.signals import parse_signal
from skiff.apiserver.views import LIVE, Status, compile_filters, container_view, is_live, restarting, split_filters
from skiff.common import errors, trace
from skiff.common.server import CALL_TIMEOUT
from skiff.exec.v1 import exec_pb2
from skiff.graph.v1 import graph_pb2
from skiff.net.v1 import net_pb2
from skiff.types.v1 import types_pb2

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Network modes this version supports; "" means the default, "bridge" (as Docker).
NETWORK_MODES = ("bridge", "none", "host")
DEFAULT_NETWORK_MODE = "bridge"
DEFAULT_STOP_TIMEOUT = 10
STDIN_UNSUPPORTED = errors.STDIN_UNSUPPORTED
INVALID_NETWORK_MODE = errors.INVALID_NETWORK_MODE
#: How long an attach with await_removed waits for the auto-remove before it sends the exit
#: status without ``removed`` (the client then asks WaitContainer(REMOVED) itself).
REMOVAL_WAIT = 60.0
#: Exit statuses of containers this gateway removed, for WaitContainer(REMOVED) callers
#: that lose the race with the removal (bounded: only the most recent are kept).
_EXITS_KEPT = 1024

Condition = api_pb2.WaitCondition
_FULL_ID = re.compile(r"[0-9a-f]{64}\Z")


class Containers:
    """The container half of the public API, over graph, exec and net backends."""

    def __init__(
        self,
        graph: GraphBackend,
        exec_: ExecBackend,
        net: NetBackend,
        *,
        poll_interval: float = 0.075,
        watch_interval: float = 30.0,
        release_interval: float = 2.0,
        daemon_id: str = "",
    ):
        #: graph, keeping the records of containers just created here (their start and wait ask no more)
        self._fresh = FreshRecords(graph)
        self._graph = cast(GraphBackend, self._fresh)
        self._exec = exec_
        self._net = net
        self._poll = poll_interval
        self._watch_interval = watch_interval
        self._release_interval = release_interval
        self._watching: set[str] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._exits: OrderedDict[str, api_pb2.WaitContainerResponse] = OrderedDict()
        # The containers whose last start went through here and succeeded (the most recent): their
        # task exists and has no start error, so a wait can be a WaitTask at once (no GetTask first).
        self._started_ok: OrderedDict[str, None] = OrderedDict()
        # Attach streams open per container: auto-remove waits for them, so that a client
        # attached before start (`run --rm`) always gets the output and the exit status.
        self._attached: Counter[str] = Counter()
        self._detached = threading.Condition(self._lock)
        #: the daemon's --log-driver/--log-opt (empty: json-file with skiff's rotation defaults)
        self.log_defaults = types_pb2.LogConfig()
        # Start and the release of the network at exit, per container (striped: nothing to clean up).
        self._net_locks = [threading.Lock() for _ in range(64)]
        # Bumped when this gateway started or removed a container: waiters for those wake
        # at once; the poll interval only bounds what happens elsewhere (another gateway).
        self._changes = threading.Condition()
        self._generation = 0
        #: ListContainers without filters: graphsvc's (generation, records), and per ``all`` the
        #: answer with what it was made from (list_response)
        self._records: tuple[str, list[graph_pb2.Container]] | None = None
        self._listed: dict[bool, tuple[object, api_pb2.ListContainersResponse]] = {}
        #: id -> (record, its bytes, task bytes, endpoint bytes, view) of the last such list
        self._views: dict[str, tuple[graph_pb2.Container, bytes, bytes, bytes, api_pb2.Container]] = {}
        # Backend calls a start makes beside another one (its rootfs while the endpoint is made).
        self._helpers = futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="start-helper")
        # The containers whose record this gateway's auto-remove has deleted (the most recent),
        # and those being removed now (by their watcher, or by the attached run that saw the exit).
        self._gone: OrderedDict[str, None] = OrderedDict()
        self._removing: set[str] = set()
        # Clean-ups of auto-removed containers (task, endpoint) still running: close() waits for them.
        self._cleaning = 0
        self._cleaned = threading.Condition()
        #: restart policies (state in graphsvc, see restarts.py)
        self.restarts = Restarter(self, daemon_id, watch_interval=watch_interval)

    # --- reading -------------------------------------------------------------

    def _task(self, container_id: str) -> exec_pb2.Task | None:
        try:
            return self._exec.get_task(container_id)
        except errors.NotFound:
            return None

    def _endpoint(self, container_id: str) -> net_pb2.Endpoint | None:
        try:
            return self._net.get_endpoint(container_id)
        except errors.NotFound:
            return None

    def inspect(self, ref: str) -> api_pb2.Container:
        record = self._graph.get_container(ref)
        try:
            rootfs: types_pb2.Mount | None = self._graph.get_rootfs(record.id).rootfs
        except errors.NotFound:
            rootfs = None
        return container_view(record, self._task(record.id), self._endpoint(record.id), rootfs)

    def list_containers(self, all_: bool, filters: list[types_pb2.Filter], size: bool = False
                        ) -> list[api_pb2.Container]:
        """Three calls whatever the number of containers (four with ``size``); newest first.

        name, id, label and ancestor are answered by graphsvc from the GraphDB; status and
        exited here, from the tasks.
        """
        graph_filters, state_filters = split_filters(filters)
        match = compile_filters(state_filters)  # bad filters fail before any backend call
        # As Docker: status and exited imply all.
        show_all = all_ or any(f.key in ("status", "exited") for f in filters)
        records = self._graph.list_containers(graph_filters) if graph_filters else self._graph.list_containers()
        views = self._merged(records, self._exec.list_tasks(), self._net.list_endpoints(), show_all, match)
        if size and views:
            sizes = self._graph.container_sizes([v.id for v in views])
            for v in views:
                v.size_rw, v.size_root_fs = sizes.get(v.id, (0, 0))
        return views

    @staticmethod
    def _merged(records: list[graph_pb2.Container], tasks: list[exec_pb2.Task], endpoints: list[net_pb2.Endpoint],
                show_all: bool, match: Callable[[api_pb2.Container], bool]) -> list[api_pb2.Container]:
        by_id = {t.id: t for t in tasks}
        by_container = {e.container_id: e for e in endpoints}
        views = [container_view(r, by_id.get(r.id), by_container.get(r.id)) for r in records]
        views = [v for v in views if (show_all or v.state.status in LIVE) and match(v)]
        views.sort(key=lambda v: (v.created.seconds, v.created.nanos), reverse=True)
        return views

    def list_response(self, all_: bool, filters: list[types_pb2.Filter], size: bool = False
                      ) -> api_pb2.ListContainersResponse:
        """ListContainers' answer. Plain ``ps``/``ps -a`` (no filters, no sizes) is kept and given
        again while graphsvc's generation and every task and endpoint are unchanged: the three
        backend calls still happen, the work per container does not."""
        if filters or size:
            return api_pb2.ListContainersResponse(containers=self.list_containers(all_, filters, size))
        known = self._records
        generation, records = self._graph.list_containers_since(known[0] if known else "")
        unchanged = records is None and known is not None
        if records is None and known is not None:
            records = known[1]
        elif records is None:  # not asked as unchanged: only a graphsvc that ignores the field
            records = self._graph.list_containers()
        elif generation:
            self._records = (generation, records)
        tasks = self._exec.list_tasks()
        endpoints = self._net.list_endpoints()
        task_bytes = {t.id: t.SerializeToString(deterministic=True) for t in tasks}
        key = (generation, task_bytes, [e.SerializeToString(deterministic=True) for e in endpoints])
        hit = self._listed.get(all_)
        if generation and hit is not None and hit[0] == key:
            return hit[1]
        views = self._kept_views(records, tasks, task_bytes, endpoints, unchanged)
        views = [v for v in views if all_ or v.state.status in LIVE]
        views.sort(key=lambda v: (v.created.seconds, v.created.nanos), reverse=True)
        resp = api_pb2.ListContainersResponse(containers=views)  # copies: the kept views stay as they are
        if generation:
            self._listed[all_] = (key, resp)  # a concurrent list may win: either is correct
        return resp

    def _kept_views(self, records: list[graph_pb2.Container], tasks: list[exec_pb2.Task], task_bytes: dict[str, bytes],
                    endpoints: list[net_pb2.Endpoint], unchanged: bool) -> list[api_pb2.Container]:
        """container_view of each record, made again only for those whose record, task or
        endpoint changed since the last call (a list after one start merges one container)."""
        tasks_by_id = {t.id: t for t in tasks}
        by_container = {e.container_id: e for e in endpoints}
        kept = self._views
        made: dict[str, tuple[graph_pb2.Container, bytes, bytes, bytes, api_pb2.Container]] = {}
        out = []
        for r in records:
            task = task_bytes.get(r.id, b"")
            endpoint = by_container.get(r.id)
            ep = endpoint.SerializeToString(deterministic=True) if endpoint is not None else b""
            hit = kept.get(r.id)
            # the same record object of a list graphsvc said is unchanged: the same bytes
            same = unchanged and hit is not None and hit[0] is r
            record = hit[1] if same and hit is not None else r.SerializeToString(deterministic=True)
            if hit is not None and (hit[1], hit[2], hit[3]) == (record, task, ep):
                view = hit[4]
            else:
                view = container_view(r, tasks_by_id.get(r.id), endpoint)
            made[r.id] = (r, record, task, ep, view)
            out.append(view)
        self._views = made  # a concurrent list may win: either is correct
        return out

    # --- lifecycle -----------------------------------------------------------

    def create(self, req: api_pb2.CreateContainerRequest) -> api_pb2.CreateContainerResponse:
        host = types_pb2.HostConfig()
        host.CopyFrom(req.host_config)
        mode = networks.normalize_mode(self._graph, self._net, host.network_mode or DEFAULT_NETWORK_MODE,
                                       list(host.network_aliases), host.ipv4_address)
        if host.memory_bytes < 0:
            raise errors.InvalidArgument(f"invalid memory limit {host.memory_bytes}: must not be negative")
        if host.pids_limit < 0:
            raise errors.InvalidArgument(f"invalid pids limit {host.pids_limit}: must not be negative")
        host.network_mode = mode
        host.mac_address = networks.check_mac(host.mac_address, mode)
        hostopts.validate(host)
        parse_signal(req.config.stop_signal, signal.SIGTERM)  # a bad --stop-signal fails the create
        nsopts.validate(host, req.config.hostname, self._graph)
        host.log_config.CopyFrom(logopts.resolve(host.log_config, self.log_defaults))
        with trace.span("resolve image, record"):
            created = self._graph.create_container(
                graph_pb2.CreateContainerRequest(name=req.name, config=req.config, host_config=host)
            )
        events.container(created.container, "create")
        return api_pb2.CreateContainerResponse(id=created.container.id)

    def start(self, ref: str, record: graph_pb2.Container | None = None) -> exec_pb2.Task | None:
        """A start by the user: a pending restart is done now, and the restart count starts again.
        The task as it was before (None: never started); ``record``: already read by the caller."""
        if record is None:
            record = self._graph.get_container(ref)
        with self.restarts.locked(record.id):
            if not record.HasField("restart_state") or record.restart_state == graph_pb2.RestartState():
                # Nothing for manual_start to reset: the task is asked for beside the endpoint.
                return self._start_record(record)
            task = self._task(record.id)
            if is_live(task):
                return task
            self.restarts.manual_start(record)
            self._start_record(record, (task,))
            return task

    def _start_record(self, record: graph_pb2.Container,
                      known: tuple[exec_pb2.Task | None] | None = None) -> exec_pb2.Task | None:
        """Endpoint, then task; used by start and by the restart manager. ``known``: the task
        just read under the container's lock (else it is asked for, beside the endpoint).
        The task as it was before (None: never started)."""
        try:
            with self._net_lock(record.id):  # a release at the last exit never races this start
                return self._start(record, known)
        except errors.FailedPrecondition as err:
            # A container that exited since the last release pass may hold the port or --ip.
            if err.reason not in ("PORT_ALREADY_ALLOCATED", "ADDRESS_IN_USE") or not self.release_exited():
                raise
            with self._net_lock(record.id):
                return self._start(record)

    def _start(self, record: graph_pb2.Container,
               known: tuple[exec_pb2.Task | None] | None = None) -> exec_pb2.Task | None:
        unstarted = self._fresh.take_unstarted(record.id)  # whatever follows, a start was tried
        if known is not None and is_live(known[0]):
            return known[0]
        if known is None and unstarted:
            known = (None,)  # created here and never started: it has no task

        def rootfs_of() -> types_pb2.Mount:
            with trace.span("prepare rootfs"):
                kept = self._fresh.rootfs(record.id)  # what CreateContainer returned with the record
                return kept if kept is not None else self._graph.get_rootfs(record.id).rootfs

        # Three independent calls at once: the task (is it running?), the rootfs and the endpoint.
        # CreateEndpoint is idempotent: for a container found running it returns its endpoint.
        asked = None if known is not None else self._helpers.submit(self._traced(self._task), record.id)
        pending: futures.Future[types_pb2.Mount]
        if self._fresh.rootfs(record.id) is not None:
            pending = futures.Future()
            pending.set_result(rootfs_of())
        else:
            pending = self._helpers.submit(self._traced(rootfs_of))
        mode = record.host_config.network_mode or DEFAULT_NETWORK_MODE
        config = record.config
        hostname = config.hostname or record.id[:12]
        hc = record.host_config
        failed: errors.SkiffError | None = None
        try:
            with trace.span("network"):
                endpoint = self._net.create_endpoint(record.id, mode, net_pb2.CreateEndpointRequest(
                    hostname=hostname, port_bindings=hc.port_bindings, exposed_ports=config.exposed_ports,
                    publish_all_ports=hc.publish_all_ports, dns=hc.dns, dns_search=hc.dns_search,
                    dns_options=hc.dns_options, extra_hosts=hc.extra_hosts,
                    container_name=record.name, aliases=hc.network_aliases, ip_address=hc.ipv4_address,
                    mac_address=hc.mac_address,
                ))
        except errors.SkiffError as err:
            failed = err
        finally:
            rootfs_done = pending.exception() is None  # waits; all calls are over from here on
            if asked is not None:
                asked.exception()
        # execsvc's error, if any, is raised here; an endpoint made meanwhile is left to the
        # release of exited containers' endpoints (the task may be running: it may be its own).
        task = known[0] if known is not None else asked.result() if asked is not None else None
        if is_live(task):
            return task  # running already: Start is idempotent (and the endpoint is its own)
        if failed is not None:
            raise failed
        if not rootfs_done:
            self._best_effort(self._net.delete_endpoint, record.id)
        rootfs = pending.result()  # raises the rootfs's error
        spec = exec_pb2.TaskSpec(
            id=record.id,
            args=[record.path, *record.args] if record.path else list(record.args),
            env=config.env,
            working_dir=config.working_dir,
            user=config.user,
            hostname=hostname,
            rootfs=rootfs,
            etc_hosts=endpoint.hosts,
            etc_resolv_conf=endpoint.resolv_conf,
            etc_hostname=hostname + "\n" if mode != "host" else "",
            netns_path=endpoint.netns_path,
            host_network=mode == "host",
            memory_bytes=record.host_config.memory_bytes,
            pids_limit=record.host_config.pids_limit,
            tty=config.tty,
            open_stdin=config.open_stdin,
            console_size=record.host_config.console_size,
            healthcheck=config.healthcheck,
        )
        hostopts.fill_task_spec(spec, record.host_config)
        spec.mounts.extend(record.mounts)
        try:
            nsopts.fill_task_spec(spec, record.host_config, self._graph, self._exec)
        except errors.SkiffError:
            self._best_effort(self._net.delete_endpoint, record.id)
            raise
        self._forget_start(record.id)
        try:
            with trace.span("spawn, exec"):
                self._exec.start_task(spec)
        except errors.AlreadyExists:
            return task  # a concurrent start won; Start is idempotent
        except errors.SkiffError:
            self._best_effort(self._net.delete_endpoint, record.id)
            if record.host_config.auto_remove:  # as Docker: --rm also removes a container that failed
                self._best_effort(self._delete, record.id, False, True)
            raise  # unchanged: the CLI maps COMMAND_NOT_FOUND etc. to exit codes
        with self._lock:
            self._started_ok[record.id] = None
            while len(self._started_ok) > _EXITS_KEPT:
                self._started_ok.popitem(last=False)
        self._changed()
        events.container(record, "start")
        if record.host_config.auto_remove:
            self._watch(record.id)
        self.restarts.started(record)
        return task

    def _forget_start(self, container_id: str) -> None:
        with self._lock:
            self._started_ok.pop(container_id, None)

    @staticmethod
    def _traced(fn: Callable[..., T]) -> Callable[..., T]:
        """``fn`` for a helper thread, in the caller's trace (if any)."""
        traced = trace.current()

        def run(*args: Any) -> T:
            with trace.activate(traced):
                return fn(*args)

        return run

    def _net_lock(self, container_id: str) -> threading.Lock:
        return self._net_locks[hash(container_id) % len(self._net_locks)]

    def _release_network(self, container_id: str) -> bool:
        """As Docker: a stopped container gives back its address and published ports (not its --ip)."""
        with self._net_lock(container_id):
            if is_live(self._task(container_id)):
                return False
            self._best_effort(self._net.delete_endpoint, container_id, True)
            return True

    def release_exited(self) -> int:
        """Release the endpoints of containers that are not running (they exited by themselves, or
        while the gateway was down): two list calls, plus one release per such container."""
        endpoints = self._net.list_endpoints()
        if not endpoints:
            return 0
        tasks = {t.id: t for t in self._exec.list_tasks()}
        stale = [e.container_id for e in endpoints if not is_live(tasks.get(e.container_id))]
        return sum(self._release_network(cid) for cid in stale)

    def release_in_background(self) -> threading.Thread:
        """Every ``release_interval`` seconds, :meth:`release_exited` (one thread for all containers:
        a watcher per container would hold one execsvc worker each)."""

        def run() -> None:
            while not self._closed.wait(self._release_interval):
                try:
                    self.release_exited()
                except errors.Unavailable:
                    continue
                except Exception:
                    log.exception("releasing the networks of exited containers failed")

        thread = threading.Thread(target=run, name="network-release", daemon=True)
        thread.start()
        return thread

    def stop(self, ref: str, timeout: int | None, signal_text: str) -> None:
        """The signal, up to ``timeout`` seconds (negative: forever) for an exit, then SIGKILL."""
        record = self._graph.get_container(ref)
        self._stop(record, timeout, signal_text)
        self._release_network(record.id)  # now, so that its ports are free when stop returns
        events.stopped(record.id)

    def _stop(self, record: graph_pb2.Container, timeout: int | None, signal_text: str) -> None:
        sig = parse_signal(signal_text or record.config.stop_signal, signal.SIGTERM)
        with self.restarts.locked(record.id):
            self.restarts.manual_stop(record)
        if not is_live(self._task(record.id)):
            return
        if timeout is None and record.config.HasField("stop_timeout"):
            timeout = record.config.stop_timeout  # --stop-timeout
        grace = DEFAULT_STOP_TIMEOUT if timeout is None else timeout
        if not self._signal(record.id, sig):
            return
        if grace != 0:
            # The grace period is kept across an execsvc restart: the wait is asked again.
            until = None if grace < 0 else time.monotonic() + grace
            try:
                resume.retrying(lambda: self._exec.wait_task(
                    record.id, timeout=None if until is None else max(until - time.monotonic(), 0.0)), None, until)
                return
            except errors.DeadlineExceeded:
                log.info("container %s did not exit within %ds of signal %d: killing", record.id, grace, sig)
        if self._signal(record.id, signal.SIGKILL):
            resume.retrying(lambda: self._exec.wait_task(record.id, timeout=CALL_TIMEOUT), None,
                            time.monotonic() + CALL_TIMEOUT)

    def _signal(self, container_id: str, sig: int) -> bool:
        """Send ``sig``; False when the task is not running any more (it exited meanwhile)."""
        try:
            resume.retrying(lambda: self._exec.kill_task(container_id, sig), None, time.monotonic() + CALL_TIMEOUT)
            events.killed(container_id, sig)
            return True
        except (errors.FailedPrecondition, errors.NotFound):
            return False

    def kill(self, ref: str, signal_text: str) -> None:
        record = self._graph.get_container(ref)
        sig = parse_signal(signal_text, signal.SIGKILL)
        task = self._task(record.id)
        stop_sig = parse_signal(record.config.stop_signal, signal.SIGTERM)
        if sig in (signal.SIGKILL, signal.SIGTERM, stop_sig) and (is_live(task) or restarting(record, task)):
            with self.restarts.locked(record.id):
                self.restarts.manual_stop(record)  # as Docker: a kill with the stop signal ends the policy
            if not is_live(task):
                return  # it was waiting for a restart: now it stays stopped
        if not is_live(task):
            raise errors.FailedPrecondition(
                f"Container {record.id} is not running", reason=errors.CONTAINER_NOT_RUNNING
            )
        self._exec.kill_task(record.id, sig)
        events.killed(record.id, sig)

    def remove(self, ref: str, force: bool, remove_link: bool = False, remove_volumes: bool = False) -> None:
        if remove_link:
            self._remove_link(ref)
            return
        record = self._graph.get_container(ref)
        with self.restarts.locked(record.id):  # a restart due meanwhile finds the record gone
            task = self._task(record.id)
            if restarting(record, task) and not force:
                raise errors.FailedPrecondition(
                    f"You cannot remove a restarting container {record.id}. "
                    "Stop the container before attempting removal or force remove",
                    reason=errors.CONTAINER_RUNNING,
                )
            if is_live(task):
                if not force:
                    raise errors.FailedPrecondition(
                        f"You cannot remove a running container {record.id}. "
                        "Stop the container before attempting removal or force remove",
                        reason=errors.CONTAINER_RUNNING,
                    )
                self.restarts.manual_stop(record)
                if self._signal(record.id, signal.SIGKILL):
                    self._exec.wait_task(record.id, timeout=CALL_TIMEOUT)
                self._delete(record.id, force=force, remove_volumes=remove_volumes)
                return
            if force:
                self.restarts.manual_stop(record)
            # not live, and under the lock: the task is as read above (one GetTask less)
            self._delete(record.id, force=force, remove_volumes=remove_volumes, known=(task,))

    def _remove_link(self, name: str) -> None:
        """Docker's ``rm --link /parent/alias``: the edge goes, both containers stay."""
        parent, _, alias = ("/" + name.lstrip("/")).rpartition("/")
        if not parent or not alias:
            raise errors.InvalidArgument("Conflict, cannot remove the default link name of the container")
        self._graph.delete_link(parent.lstrip("/"), alias)

    def _delete(self, container_id: str, force: bool = False, remove_volumes: bool = False,
                known: tuple[exec_pb2.Task | None] | None = None) -> None:
        """``known``: the task the caller has just read (else it is asked for)."""
        # Record last: if anything before fails, the record remains and rm can be retried.
        task = known[0] if known is not None else self._task(container_id)
        events.exited(task)
        if task is not None and not is_live(task):
            with self._lock:
                self._exits[container_id] = _exit_of(task)
                while len(self._exits) > _EXITS_KEPT:
                    self._exits.popitem(last=False)
        self._forget_start(container_id)
        with trace.span("remove: task"):
            self._exec.delete_task(container_id, force=force, remove_logs=True)
        with trace.span("remove: endpoint"):
            self._net.delete_endpoint(container_id)
        with trace.span("remove: record"):
            if remove_volumes:  # its anonymous volumes (`rm -v`, `run --rm`)
                self._graph.delete_container(container_id, remove_volumes=True)
            else:
                self._graph.delete_container(container_id)
        self._changed()
        events.container(container_id, "destroy")

    # --- waiting -------------------------------------------------------------

    def wait(self, ref: str, condition: int, call: Call) -> api_pb2.WaitContainerResponse:
        not_running = condition not in (Condition.WAIT_CONDITION_NEXT_EXIT, Condition.WAIT_CONDITION_REMOVED)
        with self._lock:
            started_here = ref in self._started_ok
        # By full id (what API clients hold): the task is asked for while the record is.
        early = (self._helpers.submit(self._traced(self._task), ref)
                 if not_running and _FULL_ID.match(ref) and not started_here and not self._fresh.has(ref)
                 else None)
        try:
            record = self._graph.get_container(ref)
        finally:
            failed = early is not None and early.exception() is not None  # waits
        if condition == Condition.WAIT_CONDITION_NEXT_EXIT:
            return self._wait_next_exit(record.id, call)
        if condition == Condition.WAIT_CONDITION_REMOVED:
            return self._wait_removed(record.id, call)
        with self._lock:
            started_here = record.id in self._started_ok
        if started_here:
            # Started here without error: WaitTask answers at once for an exited task, with the
            # exit code GetTask would give; a task removed (or not started) meanwhile is asked
            # for as below.
            try:
                return self._wait_exit(record.id, call)
            except (errors.NotFound, errors.FailedPrecondition):
                self._forget_start(record.id)
        # the early answer is for this container only when the ref was its id (not a 64-hex name)
        task = early.result() if early is not None and not failed and record.id == ref else self._task(record.id)
        if not is_live(task):
            return _exit_of(task)
        return self._wait_exit(record.id, call)

    def _wait_task(self, container_id: str, call: Call) -> exec_pb2.WaitTaskResponse:
        """A wait survives a restart of execsvc: the exit code is on disk, ask again."""
        while True:
            try:
                return self._exec.wait_task(container_id, call=call)
            except errors.SkiffError as e:
                if not resume.lost(e):
                    raise
                if not self._tick(call):
                    raise _gave_up(call) from None

    def _wait_exit(self, container_id: str, call: Call) -> api_pb2.WaitContainerResponse:
        return api_pb2.WaitContainerResponse(exit_code=self._wait_task(container_id, call).exit_code)

    def _wait_next_exit(self, container_id: str, call: Call) -> api_pb2.WaitContainerResponse:
        since = self._seen()
        task = self._task(container_id)
        if is_live(task):
            return self._wait_exit(container_id, call)
        before = task.state.started_at if task is not None else None
        while self._tick(call, since):
            since = self._seen()
            task = self._task(container_id)
            if task is not None and task.state.started_at != before:  # it has started again
                return self._wait_exit(container_id, call) if is_live(task) else _exit_of(task)
        raise _gave_up(call)

    def _wait_removed(self, container_id: str, call: Call) -> api_pb2.WaitContainerResponse:
        """Until the record is gone; the exit code is the last one seen before that."""
        result = api_pb2.WaitContainerResponse()
        while True:
            since = self._seen()
            try:
                self._graph.get_container(container_id)
            except errors.NotFound:
                with self._lock:
                    return self._exits.get(container_id, result)
            task = self._task(container_id)
            if task is not None:
                if is_live(task):
                    try:
                        result = self._wait_exit(container_id, call)
                    except errors.NotFound:
                        pass  # removed while we waited
                    continue
                result = _exit_of(task)
            if not self._tick(call, since):
                raise _gave_up(call)

    def _seen(self) -> int:
        with self._changes:
            return self._generation

    def _changed(self) -> None:
        with self._changes:
            self._generation += 1
            self._changes.notify_all()

    def _tick(self, call: Call, since: int | None = None) -> bool:
        """Wait up to the poll interval (less once something changed after ``since``); False when over."""
        if since is None:
            return not self._closed.is_set() and call.sleep(self._poll)
        if self._closed.is_set() or call.expired():
            return False
        with self._changes:
            if self._generation == since:
                self._changes.wait(call.remaining(self._poll))
        return not self._closed.is_set() and not call.expired()

    # --- output --------------------------------------------------------------

    def logs(self, req: api_pb2.ContainerLogsRequest, call: Call) -> Iterator[types_pb2.LogEntry]:
        record = self._graph.get_container(req.container)
        if record.host_config.log_config.type == "none":
            raise errors.FailedPrecondition("configured logging driver does not support reading",
                                            reason=errors.LOGS_NOT_AVAILABLE)
        if self._task(record.id) is None:
            return iter(())  # never started: no output
        both = not (req.stdout or req.stderr)
        upstream = exec_pb2.ReadLogsRequest(
            id=record.id, follow=req.follow, stdout=req.stdout or both, stderr=req.stderr or both,
        )
        if req.HasField("tail"):  # unset means all
            upstream.tail = req.tail
        if req.HasField("since"):
            upstream.since.CopyFrom(req.since)
        if req.HasField("until"):
            upstream.until.CopyFrom(req.until)
        return _drain(resume.ResumingLogs(self._exec, upstream, call), call)

    def attach(
        self, requests: Iterator[api_pb2.AttachContainerRequest], call: Call,
        attached: Callable[[bool], None] | None = None,
    ) -> Iterator[api_pb2.AttachContainerResponse]:
        """Output (replayed with ``logs``, then live) and, last, the exit status.

        ``attached(start)`` is called once the stream is registered: from then on an auto-remove
        waits for it, so a client may start the container (the gateway sends the stream's
        initial metadata then, and the CLI waits for it before StartContainer). With
        ``options.start`` the gateway starts it first (``start`` is then True): a failed start
        ends the stream before its initial metadata, with the start's status.
        """
        first = next(requests, None)
        if first is None or first.WhichOneof("part") != "options":
            raise errors.InvalidArgument("the first attach request must carry the options")
        options = first.options
        keys = stdio.detach_sequence(options.detach_keys)
        record = self._graph.get_container(options.container)
        events.container(record, "attach")
        with self._lock:
            self._attached[record.id] += 1
        registered = [True]

        def release() -> None:
            """Once: an auto-remove need not wait for this stream any more."""
            with self._lock:
                if not registered[0]:
                    return
                registered[0] = False
                self._attached[record.id] -= 1
                if self._attached[record.id] <= 0:
                    del self._attached[record.id]
                self._detached.notify_all()

        try:
            if options.start:
                with trace.span("start (attach)"):
                    self.start(record.id, record)
            if attached is not None:
                attached(options.start)
            yield from self._attached_stream(record.id, options, call,
                                             self._input(record, options, requests, keys), release,
                                             record.host_config.auto_remove, options.start)
        finally:
            release()

    def _input(self, record: graph_pb2.Container, options: api_pb2.AttachOptions,
               requests: Iterator[api_pb2.AttachContainerRequest], keys: bytes) -> stdio.Pump | None:
        """The pump of the client's stdin and resizes, when the container takes either."""
        with_stdin = options.stdin and record.config.open_stdin
        if not (with_stdin or record.config.tty):
            return None
        target = exec_pb2.StdinTarget(task_id=record.id, close_on_eof=with_stdin and record.config.stdin_once)
        return stdio.Pump(requests, target, keys, self._exec.attach_stdin, lambda: None, with_stdin=with_stdin)

    def _attached_stream(self, cid: str, options: api_pb2.AttachOptions, call: Call,
                         pump: stdio.Pump | None = None, release: Callable[[], None] | None = None,
                         auto_remove: bool = False, started: bool = False,
                         ) -> Iterator[api_pb2.AttachContainerResponse]:
        # Attached before start: wait for it (a task still "created" is being started). With
        # await_start (`run`, `start -a`) a container that is not running is waited for until
        # its next start, so a StartContainer racing this attach is never taken for the old exit.
        # ``started``: the gateway has just started it (or found it running): no need to wait.
        task = None if started else self._task(cid)
        before = task.state.started_at if options.await_start and task is not None and not is_live(task) else None
        while not started:
            since = self._seen()
            task = self._task(cid)
            if (task is not None and task.state.status != Status.CONTAINER_STATUS_CREATED
                    and (before is None or (task.state.started_at and task.state.started_at != before))):
                break
            with self._lock:
                removed = self._exits.get(cid)
            if removed is not None:  # it ran and was removed meanwhile
                yield api_pb2.AttachContainerResponse(exit=api_pb2.ExitStatus(exit_code=removed.exit_code))
                return
            if not self._tick(call, since):
                raise _gave_up(call)
        both = not (options.stdout or options.stderr)
        upstream = exec_pb2.ReadLogsRequest(
            id=cid, follow=True, tail=-1 if options.logs else 0,
            stdout=options.stdout or both, stderr=options.stderr or both, attach=True,
        )
        output = call
        if pump is not None:  # a detach ends the output, not the caller's call
            output = Call(call.remaining())
            call.on_cancel(output.cancel)
            pump.start(on_detach=output.cancel)
        following = resume.ResumingLogs(self._exec, upstream, output)
        try:
            for entry in _drain(following, output):
                yield api_pb2.AttachContainerResponse(output=entry)
        finally:
            if pump is not None:
                pump.stop()
        if pump is not None and pump.detached.is_set():
            yield api_pb2.AttachContainerResponse(detached=True)
            return
        if call.cancelled:
            return
        result = following.exit_status()  # execsvc sends it at the end of the follow
        if result is None:
            result = self._wait_task(cid, call)
        status = api_pb2.ExitStatus(exit_code=result.exit_code, oom_killed=result.oom_killed)
        # `run --rm`: the only stream attached removes the container itself, at once (no hand-off
        # to its watcher thread); the exit status goes out once the record is gone.
        claimed = removing = options.await_removed and auto_remove and self._claim_removal(cid, alone=True)
        if release is not None:  # output and status in hand: the removal may start while we send them
            release()
        try:
            if removing:
                try:
                    self._delete_record(cid, api_pb2.WaitContainerResponse(exit_code=result.exit_code))
                    status.removed = True
                except errors.NotFound:
                    removing, status.removed = False, True  # removed by a user first
                except errors.SkiffError as err:
                    removing = False
                    log.warning("auto-remove of %s failed: %s", cid, err)
            elif options.await_removed and auto_remove:
                bounded = Call(call.remaining(REMOVAL_WAIT))
                call.on_cancel(bounded.cancel)
                status.removed = self._removed(cid, bounded)
            yield api_pb2.AttachContainerResponse(exit=status)
        finally:
            if removing:  # after the exit status went out (or the client left)
                self._clean_up(cid)
            if claimed:
                self._unclaim_removal(cid)

    def _removed(self, container_id: str, call: Call) -> bool:
        """Until the auto-remove has deleted the record (True), or the call is over (False)."""
        while True:
            since = self._seen()
            with self._lock:
                if container_id in self._gone:  # removed here: no need to ask graphsvc
                    return True
            try:
                self._graph.get_container(container_id)
            except errors.NotFound:
                return True
            if not self._tick(call, since):
                return False

    # --- auto-remove ---------------------------------------------------------

    def sweep(self) -> None:
        """Remove exited auto-remove containers and watch running ones (after a restart); remove
        the tasks and endpoints left without a record (an auto-remove cut short by a crash)."""
        # Tasks and endpoints first: one made after these lists has a record in the next one.
        tasks = {t.id: t for t in self._exec.list_tasks()}
        endpoints = {e.container_id for e in self._net.list_endpoints()}
        records = self._graph.list_containers()
        for record in records:
            task = tasks.get(record.id)
            if not record.host_config.auto_remove or task is None:
                continue  # as Docker: a created, never started container stays
            if is_live(task):
                self._watch(record.id)
            else:
                self._auto_remove(record.id)
        self.restarts.sweep(records, tasks)
        for orphan in sorted((set(tasks) | endpoints) - {r.id for r in records}):
            if is_live(tasks.get(orphan)):
                log.warning("container %s runs without a record: left alone", orphan)
                continue
            self._clean_up(orphan)

    def sweep_in_background(self, retry_for: float = 60.0) -> threading.Thread:
        """Sweep once the backends answer (they may start after us)."""

        def run() -> None:
            call = Call(retry_for)
            while not self._closed.is_set():
                try:
                    self.sweep()
                    return
                except errors.Unavailable as err:
                    if not call.sleep(1.0) or self._closed.is_set():
                        log.warning("auto-remove sweep gave up: %s", err)
                        return
                except Exception:
                    log.exception("auto-remove sweep failed")
                    return

        thread = threading.Thread(target=run, name="auto-remove-sweep", daemon=True)
        thread.start()
        self.release_in_background()
        return thread

    def _watch(self, container_id: str) -> None:
        with self._lock:
            if container_id in self._watching:
                return
            self._watching.add(container_id)
        traced = trace.current()  # the start's trace, if any, also shows the auto-remove

        def watch() -> None:
            with trace.activate(traced):
                self._watch_loop(container_id)

        threading.Thread(target=watch, name=f"auto-remove-{container_id[:12]}", daemon=True).start()

    def _watch_loop(self, container_id: str) -> None:
        try:
            while not self._closed.is_set():
                try:
                    # In slices, so that close() ends the thread without a wait forever.
                    self._exec.wait_task(container_id, timeout=self._watch_interval)
                except errors.DeadlineExceeded:
                    continue
                except errors.NotFound:
                    return  # removed by someone else
                except errors.Unavailable:
                    self._closed.wait(1.0)
                    continue
                self._auto_remove(container_id)
                return
        except Exception:
            log.exception("auto-remove of %s failed", container_id)
        finally:
            with self._lock:
                self._watching.discard(container_id)

    def _auto_remove(self, container_id: str, attach_grace: float = 30.0) -> None:
        with self._lock:  # let attached clients read the output and the exit status first
            self._detached.wait_for(lambda: self._attached[container_id] <= 0, timeout=attach_grace)
        if not self._claim_removal(container_id):
            return  # the attached run is removing it
        try:
            task = self._task(container_id)
            if is_live(task):
                return  # started again meanwhile
            try:
                self._delete_record(container_id, _exit_of(task) if task is not None else None)
            except errors.NotFound:
                return  # removed by a user first
            log.info("auto-removed container %s", container_id)
            self._clean_up(container_id)
        finally:
            self._unclaim_removal(container_id)

    def _claim_removal(self, container_id: str, alone: bool = False) -> bool:
        """One auto-remove per container at a time; ``alone``: only if no other stream is attached."""
        with self._lock:
            if container_id in self._removing or (alone and self._attached[container_id] > 1):
                return False
            self._removing.add(container_id)
            return True

    def _unclaim_removal(self, container_id: str) -> None:
        with self._lock:
            self._removing.discard(container_id)

    def _delete_record(self, container_id: str, exit_: api_pb2.WaitContainerResponse | None) -> None:
        """The record first, with its anonymous volumes (as Docker, --rm takes them): from then on
        the container is gone for every caller, and WaitContainer(REMOVED) returns. Its task and
        endpoint, which nobody can reach without the record, are for :meth:`_clean_up`."""
        if exit_ is not None:
            with self._lock:
                self._exits[container_id] = exit_
                while len(self._exits) > _EXITS_KEPT:
                    self._exits.popitem(last=False)
        with trace.span("remove: record"):
            self._graph.delete_container(container_id, remove_volumes=True)
        with self._lock:
            self._gone[container_id] = None
            while len(self._gone) > _EXITS_KEPT:
                self._gone.popitem(last=False)
        self._changed()
        events.container(container_id, "destroy")

    def _clean_up(self, container_id: str) -> None:
        """The exited task (bundle, cgroup, log) and the endpoint of a container without a record;
        asked again while execsvc or netsvc restarts (up to a minute), else left to the next sweep.
        Forced: a start that raced the removal of the record has made a task nobody can reach.
        ``close()`` waits for the clean-ups in progress."""
        with self._cleaned:
            self._cleaning += 1
        try:
            self._clean_up_now(container_id)
        finally:
            with self._cleaned:
                self._cleaning -= 1
                self._cleaned.notify_all()

    def _clean_up_now(self, container_id: str) -> None:
        self._forget_start(container_id)
        until = time.monotonic() + 60
        steps: tuple[tuple[str, Callable[[], None]], ...] = (
            ("remove: task", lambda: self._exec.delete_task(container_id, force=True, remove_logs=True)),
            ("remove: endpoint", lambda: self._net.delete_endpoint(container_id)),
        )
        for name, step in steps:
            with trace.span(name):
                try:
                    resume.retrying(step, None, until)
                except errors.NotFound:
                    pass
                except errors.SkiffError as err:
                    log.warning("%s of %s failed (the next start-up sweep retries): %s", name, container_id, err)

    def close(self, cleanup_grace: float = 10.0) -> None:
        """Stop background work (watchers end within one watch interval); let the clean-ups of
        auto-removed containers finish (up to ``cleanup_grace`` seconds)."""
        self._closed.set()
        self.restarts.close()
        self._helpers.shutdown(wait=False)
        with self._cleaned:
            self._cleaned.wait_for(lambda: self._cleaning <= 0, timeout=cleanup_grace)

    @staticmethod
    def _best_effort(fn: Callable[..., object], *args: object) -> None:
        try:
            fn(*args)
        except errors.SkiffError as err:
            log.warning("cleanup %s%r failed: %s", getattr(fn, "__name__", fn), args, err)


def _exit_of(task: exec_pb2.Task | None) -> api_pb2.WaitContainerResponse:
    if task is None:
        return api_pb2.WaitContainerResponse(exit_code=0)  # never started: Docker says 0
    return api_pb2.WaitContainerResponse(exit_code=task.state.exit_code, error=task.state.error)


def _gave_up(call: Call) -> errors.SkiffError:
    if call.cancelled:
        return errors.DeadlineExceeded("the call was cancelled", reason="CANCELLED")
    return errors.DeadlineExceeded("deadline exceeded while waiting for the container")


def _drain(stream: LogStream, call: Call) -> Iterator[types_pb2.LogEntry]:
    """The stream's entries; ends quietly when the task is gone or our caller left."""
    try:
        yield from stream
    except errors.NotFound:
        return
    except errors.SkiffError:
        if call.cancelled:
            return
        raise
    finally:
        stream.cancel()
