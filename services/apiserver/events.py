"""Events (Docker's ``docker events``): what the gateway did, and the exits execsvc saw.

The gateway's handlers call the one-line hooks at the bottom of this module
(``container(record, "start")``, ``killed(cid, sig)``, ``image("sha256:..", "tag", name=..)``,
...); each makes an :class:`api_pb2.Event` stamped with the time in nanoseconds and hands it
to the process's :class:`Hub`, which keeps the last :data:`KEPT` (Docker keeps 256) for
``since`` and passes each to the live streams whose filters it matches.

Container exits come from execsvc's WatchTasks stream (one watcher thread there for all
tasks): the hub subscribes at start-up and again after execsvc restarts; each exit is a
``die`` (with ``exitCode``), after an ``oom`` when the kernel killed it. The stream's first
message lists the running tasks: a task the hub knew as running that is missing from it
ended while execsvc was down, and is reported from GetTasks. A run's exit is reported once
(keyed by its finish time), whether the stream, a stop or a removal saw it first.

The container's attributes (name, image, labels) are kept from the record when the
gateway creates or starts it, so that a ``die`` or ``destroy`` after the record is gone
still carries them.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from skiff.api.v1 import api_pb2
from skiff.common import errors
from skiff.exec.v1 import exec_pb2
from skiff.graph.v1 import graph_pb2
from skiff.types.v1 import types_pb2

log = logging.getLogger(__name__)

#: How many recent events are kept for ``since`` (as Docker's eventsLimit).
KEPT = 256
#: Events a live stream may lag behind before the oldest are dropped for it.
_STREAM_BACKLOG = 4096
#: Attributes and last exits of this many containers are remembered.
_CONTAINERS_KEPT = 4096
#: How long an exit waits for the report of its run's start (a start that failed in the gateway).
_PARKED_FOR = 5.0

Type = api_pb2.EventType
TYPES = {
    "container": Type.EVENT_TYPE_CONTAINER,
    "image": Type.EVENT_TYPE_IMAGE,
    "network": Type.EVENT_TYPE_NETWORK,
    "volume": Type.EVENT_TYPE_VOLUME,
    "daemon": Type.EVENT_TYPE_DAEMON,
}
TYPE_NAMES = {v: k for k, v in TYPES.items()}
#: Docker's event types that skiff never emits (accepted in filters, as Docker does).
_OTHER_TYPES = ("plugin", "service", "node", "secret", "config", "builder")
#: Docker's filter keys; as Docker, each of daemon, container, plugin, volume, network, node,
#: service, secret and config matches an actor whose id or name starts with one of its values.
FILTER_KEYS = ("container", "daemon", "event", "image", "label", "network", "scope", "type", "volume",
               "node", "plugin", "service", "secret", "config")


# --- filters -------------------------------------------------------------------------


class Filters:
    """Docker's events filter (daemon/events/filter.go): a key given several times matches any
    of its values, all keys must match; every ``label`` must match (as Docker's MatchKVList)."""

    def __init__(self, filters: Iterable[types_pb2.Filter]):
        self.by_key: dict[str, set[str]] = {}
        for f in filters:
            if f.key not in FILTER_KEYS:
                raise errors.InvalidArgument(f"invalid filter '{f.key}'", reason=errors.UNSUPPORTED_FILTER)
            if f.key == "type" and f.value not in TYPES and f.value not in _OTHER_TYPES:
                raise errors.InvalidArgument(f"invalid event type '{f.value}'", reason=errors.UNSUPPORTED_FILTER)
            self.by_key.setdefault(f.key, set()).add(f.value)

    def _exact(self, key: str, *values: str) -> bool:
        wanted = self.by_key.get(key)
        return wanted is None or any(v in wanted for v in values)

    def _fuzzy(self, key: str, *values: str) -> bool:
        """As Docker's FuzzyMatch: equal, or a prefix of the value (ids given short)."""
        wanted = self.by_key.get(key)
        return wanted is None or any(v and (v == w or v.startswith(w)) for w in wanted for v in values)

    def _name(self, key: str, ev: api_pb2.Event) -> bool:
        return self._fuzzy(key, ev.actor.id, ev.actor.attributes.get("name", ""))

    def _event(self, action: str) -> bool:
        wanted = self.by_key.get("event")
        if wanted is None:
            return True
        # As Docker: exec_create/exec_start (whose actions carry the command) and health_status
        # given bare match their longer forms.
        if wanted & {"health_status", "exec_create", "exec_start"}:
            return any(action == w or action.startswith(w) for w in wanted)
        return action in wanted

    def _image(self, ev: api_pb2.Event) -> bool:
        attr = "name" if ev.type == Type.EVENT_TYPE_IMAGE else "image"
        name = ev.actor.attributes.get(attr, "")
        return self._exact("image", ev.actor.id, name, _strip_tag(ev.actor.id), _strip_tag(name))

    def _labels(self, attributes: Mapping[str, str]) -> bool:
        for want in self.by_key.get("label", ()):
            key, sep, value = want.partition("=")
            if key not in attributes or (sep and attributes[key] != value):
                return False
        return True

    def match(self, ev: api_pb2.Event) -> bool:
        return (self._event(ev.action)
                and self._exact("type", TYPE_NAMES.get(ev.type, ""))
                and self._exact("scope", ev.scope)
                and self._name("daemon", ev)
                and self._name("container", ev)
                and all(self._name(key, ev) for key in ("plugin", "node", "service", "secret", "config"))
                and self._name("volume", ev)
                and self._name("network", ev)
                and self._image(ev)
                and self._labels(ev.actor.attributes))


def _strip_tag(ref: str) -> str:
    """``busybox:latest`` -> ``busybox``; ``host:5000/x`` stays; digests too."""
    if "@" in ref:
        return ref.split("@", 1)[0]
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash and not ref.startswith("sha256:"):
        return ref[:colon]
    return ref


# --- the hub -------------------------------------------------------------------------


def _ns(ts: Any) -> int:
    return int(ts.seconds) * 1_000_000_000 + int(ts.nanos)


class Hub:
    """The kept events, the live streams, and what events need to know about containers."""

    def __init__(self, kept: int = KEPT):
        self._lock = threading.Lock()
        self._ring: deque[api_pb2.Event] = deque(maxlen=kept)
        self._streams: list[queue.Queue[api_pb2.Event]] = []
        self._attrs: OrderedDict[str, dict[str, str]] = OrderedDict()
        self._exits: OrderedDict[str, int] = OrderedDict()  # cid -> finished_at (ns) reported
        self._running: set[str] = set()  # tasks known running (from execsvc's stream)
        self._starts: dict[str, int] = {}  # cid -> start time (ns), for die's execDuration
        self._volumes: dict[str, list[types_pb2.MountPoint]] = {}  # cid -> its volume mounts
        self._modes: dict[str, str] = {}  # cid -> its network mode
        self._nets: dict[str, tuple[str, str]] = {}  # network name -> (id, driver), asked once
        self.graph: Any = None
        self.exec: Any = None
        self.net: Any = None
        self._born = time.time_ns()
        # Exits of runs whose start this gateway has not reported yet (a container that exits at
        # once may be seen exiting before the start call returns): reported right after the start.
        self._parked: dict[str, tuple[int, bool, int, int]] = {}
        self._closed = threading.Event()
        self._watcher: threading.Thread | None = None
        self._watch: Any = None  # the current WatchTasks call (to cancel at close)

    def bind(self, graph: Any, exec_: Any, net: Any = None) -> None:
        """The backends used to find a container's attributes, tasks and networks."""
        self.graph, self.exec, self.net = graph, exec_, net

    def _network(self, mode: str) -> tuple[str, str, str] | None:
        """(id, name, driver) of the network a container in ``mode`` is on (None: another's)."""
        name = mode or "bridge"
        if name.startswith("container:"):
            return None
        with self._lock:
            known = self._nets.get(name)
        if known is None:
            found = network_record(self.net, name) if self.net is not None else None
            if found is None:
                return None
            known = (found.id, found.driver)
            with self._lock:
                self._nets[name] = known
        return known[0], name, known[1]

    def forget_network(self, name: str) -> None:
        with self._lock:
            self._nets.pop(name, None)

    # --- publishing ----------------------------------------------------------

    def publish(self, type_: int, action: str, actor_id: str, attributes: Mapping[str, str],
                at_ns: int | None = None) -> api_pb2.Event:
        ev = api_pb2.Event(type=type_, action=action, scope="local",  # type: ignore[arg-type]
                           actor=api_pb2.EventActor(id=actor_id, attributes=dict(attributes)))
        with self._lock:
            # Kept in time order: a stream is given them as they come; ns never repeat here.
            now = time.time_ns() if at_ns is None else at_ns
            if self._ring and now <= _ns(self._ring[-1].time):
                now = _ns(self._ring[-1].time) + 1
            ev.time.seconds, ev.time.nanos = divmod(now, 1_000_000_000)
            self._ring.append(ev)
            streams = list(self._streams)
        for q in streams:
            try:
                q.put_nowait(ev)
            except queue.Full:
                log.warning("an events stream is %d events behind: dropping one", _STREAM_BACKLOG)
        return ev

    # --- reading -------------------------------------------------------------

    def stream(self, req: api_pb2.EventsRequest, cancelled: Callable[[], bool],
               subscribed: Callable[[], None] | None = None) -> Iterator[api_pb2.Event]:
        """The kept events from ``since`` (with since or until set), then live ones until ``until``.
        ``subscribed``: called once every later event is sure to reach this stream."""
        match = Filters(req.filters)
        since = _ns(req.since) if req.HasField("since") else 0
        until = _ns(req.until) if req.HasField("until") else 0
        if until and since and until < since:
            raise errors.InvalidArgument("`since` time cannot be after `until` time")
        q: queue.Queue[api_pb2.Event] = queue.Queue(maxsize=_STREAM_BACKLOG)
        now = time.time_ns()
        past_only = bool(until) and until <= now
        with self._lock:
            kept = list(self._ring) if (since or until) else []
            if not past_only:
                self._streams.append(q)
        try:
            if subscribed is not None:
                subscribed()
            for ev in kept:
                t = _ns(ev.time)
                if t < since or (until and t > until):
                    continue
                if match.match(ev):
                    yield ev
            if past_only:
                return
            while not cancelled() and not self._closed.is_set():
                left = None if not until else (until - time.time_ns()) / 1e9
                if left is not None and left <= 0:
                    return
                try:
                    ev = q.get(timeout=0.25 if left is None else min(0.25, left))
                except queue.Empty:
                    continue
                t = _ns(ev.time)
                if until and t > until:
                    return
                if t >= since and match.match(ev):
                    yield ev
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._streams.remove(q)

    # --- containers ----------------------------------------------------------

    def remember(self, record: graph_pb2.Container) -> dict[str, str]:
        attrs = dict(record.config.labels)
        attrs["image"] = record.config.image or record.image_id
        attrs["name"] = record.name.lstrip("/")
        volumes = [m for m in record.mounts if m.type == "volume"]
        with self._lock:
            if volumes:
                self._volumes[record.id] = volumes
            else:
                self._volumes.pop(record.id, None)
            self._attrs[record.id] = attrs
            self._modes[record.id] = record.host_config.network_mode
            self._attrs.move_to_end(record.id)
            while len(self._attrs) > _CONTAINERS_KEPT:
                gone, _ = self._attrs.popitem(last=False)
                self._volumes.pop(gone, None)
                self._modes.pop(gone, None)
        return attrs

    def attrs_of(self, cid: str) -> tuple[str, dict[str, str]]:
        """(full id, attributes) of a container: remembered, else its record, else none."""
        with self._lock:
            known = self._attrs.get(cid)
        if known is not None:
            return cid, dict(known)
        if self.graph is not None:
            try:
                record = self.graph.get_container(cid)
                return record.id, dict(self.remember(record))
            except errors.SkiffError:
                pass
        return cid, {}

    def container(self, ref: str | graph_pb2.Container, action: str, **extra: str) -> None:
        if isinstance(ref, graph_pb2.Container):
            cid, attrs = ref.id, self.remember(ref)
        else:
            cid, attrs = self.attrs_of(ref)
        attrs = dict(attrs)
        attrs.update(extra)
        if action == "start":
            # The start time is set once the start is published (below): an exit seen before
            # then (a container that exits at once) is parked until it, so that `die` and the
            # network's `disconnect` follow `start` and `connect`.
            with self._lock:
                volumes = list(self._volumes.get(cid, ()))
                mode = self._modes.get(cid)
            net = self._network(mode) if mode is not None else None
            if net is not None:  # as Docker: the endpoint is made before the start is reported
                self.publish(Type.EVENT_TYPE_NETWORK, "connect", net[0],
                             {"container": cid, "name": net[1], "type": net[2]})
            for m in volumes:  # and the volumes mounted
                self.publish(Type.EVENT_TYPE_VOLUME, "mount", m.name, {
                    "container": cid, "destination": m.destination, "driver": m.driver or "local",
                    "propagation": m.propagation, "read/write": str(not m.read_only).lower()})
        self.publish(Type.EVENT_TYPE_CONTAINER, action, cid, attrs)
        if action == "start":
            with self._lock:
                self._starts[cid] = time.time_ns()
                self._running.add(cid)
            self._unpark(cid)
        if action == "destroy":
            with self._lock:
                self._starts.pop(cid, None)
                self._running.discard(cid)

    def exited(self, cid: str, exit_code: int, oom_killed: bool, finished_ns: int, started_ns: int = 0) -> None:
        """``oom`` (when the kernel killed it) and ``die``, once per run (its finish time)."""
        with self._lock:
            if finished_ns and self._exits.get(cid) == finished_ns:
                return
            self._exits[cid] = finished_ns
            self._exits.move_to_end(cid)
            while len(self._exits) > _CONTAINERS_KEPT:
                self._exits.popitem(last=False)
            self._running.discard(cid)
            # started by this gateway, and that start not reported yet: the die waits for it
            if started_ns >= self._born and started_ns > self._starts.get(cid, 0):
                self._parked[cid] = (exit_code, oom_killed, finished_ns, started_ns)
                timer = threading.Timer(_PARKED_FOR, self._unpark, (cid,))
                timer.daemon = True
                timer.start()
                return
        self._report_exit(cid, exit_code, oom_killed, finished_ns, started_ns)

    def _unpark(self, cid: str) -> None:
        with self._lock:
            parked = self._parked.pop(cid, None)
        if parked is not None:
            self._report_exit(cid, *parked)

    def _report_exit(self, cid: str, exit_code: int, oom_killed: bool, finished_ns: int, started_ns: int) -> None:
        with self._lock:
            began = started_ns or self._starts.pop(cid, 0)
        if oom_killed:
            self.container(cid, "oom")
        duration = max((finished_ns or time.time_ns()) - began, 0) // 1_000_000_000 if began else 0
        self.container(cid, "die", exitCode=str(exit_code), execDuration=str(duration))
        with self._lock:
            volumes = list(self._volumes.get(cid, ()))
            mode = self._modes.get(cid)
            known = self._nets.get(mode or "bridge") if mode is not None else None
        if known is not None:
            self.publish(Type.EVENT_TYPE_NETWORK, "disconnect", known[0],
                         {"container": cid, "name": mode or "bridge", "type": known[1]})
        for m in volumes:
            self.publish(Type.EVENT_TYPE_VOLUME, "unmount", m.name, {"container": cid, "driver": m.driver or "local"})

    def exited_task(self, task: exec_pb2.Task | None) -> None:
        """The task as a stop or a removal read it: its exit, unless already reported."""
        if task is None or task.state.status != types_pb2.CONTAINER_STATUS_EXITED:
            return
        if not task.state.HasField("finished_at"):
            return
        self.exited(task.id, task.state.exit_code, task.state.oom_killed, _ns(task.state.finished_at),
                    _ns(task.state.started_at) if task.state.HasField("started_at") else 0)

    def ensure_exit(self, cid: str) -> None:
        """Report ``cid``'s exit now if its task has exited (before a ``stop``), in Docker's order."""
        if self.exec is None:
            return
        try:
            self.exited_task(self.exec.get_task(cid))
        except errors.SkiffError:
            pass

    # --- execsvc's exits -----------------------------------------------------

    def watch_exits_in_background(self) -> threading.Thread:
        """Subscribe to execsvc's WatchTasks, and again whenever the stream breaks."""
        thread = threading.Thread(target=self._watch_loop, name="events-exits", daemon=True)
        thread.start()
        self._watcher = thread
        return thread

    def _watch_loop(self) -> None:
        while not self._closed.is_set():
            try:
                self._watch_once()
            except Exception as err:  # a broken stream (execsvc restarting): subscribe again
                if self._closed.is_set():
                    return
                log.debug("task exits stream ended: %s", err)
            self._closed.wait(0.5)

    def _watch_once(self) -> None:
        watch = getattr(self.exec, "watch_tasks", None)
        if watch is None:
            self._closed.wait()
            return
        stream = watch()
        self._watch = stream
        try:
            for msg in stream:
                if self._closed.is_set():
                    return
                if msg.snapshot:
                    self._snapshot(set(msg.running))
                elif msg.HasField("exit"):
                    e = msg.exit
                    self.exited(e.id, e.exit_code, e.oom_killed, _ns(e.finished_at),
                                _ns(e.started_at) if e.HasField("started_at") else 0)
        finally:
            self._watch = None
            with contextlib.suppress(Exception):
                stream.cancel()

    def _snapshot(self, running: set[str]) -> None:
        """Tasks we knew running that are not any more ended while we were not subscribed."""
        with self._lock:
            gone = sorted(self._running - running)
            self._running |= running
        if not gone:
            return
        try:
            tasks = self.exec.get_tasks(gone)
        except errors.SkiffError as err:
            log.warning("the exits of %d containers while execsvc restarted are not reported: %s", len(gone), err)
            return
        for cid in gone:
            task = tasks.get(cid)
            if task is None:
                with self._lock:
                    self._running.discard(cid)
                continue
            self.exited_task(task)

    def close(self) -> None:
        self._closed.set()
        stream = self._watch
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.cancel()


#: The gateway's hub (one per process; server.build binds it to the backends).
HUB = Hub()


# --- hooks: one-line calls from the handlers ----------------------------------------------


def _safe(fn: Callable[[], object]) -> None:
    """An event must never fail the call that made it."""
    try:
        fn()
    except Exception:
        log.exception("recording an event failed")


def container(ref: str | graph_pb2.Container, action: str, **attributes: str) -> None:
    """A container event; ``ref`` is its record (its attributes are remembered) or its id."""
    _safe(lambda: HUB.container(ref, action, **attributes))


def killed(cid: str, sig: int) -> None:
    _safe(lambda: HUB.container(cid, "kill", signal=str(int(sig))))


def stopped(cid: str) -> None:
    """``die`` (if not reported yet), then ``stop``, as Docker orders them."""
    def run() -> None:
        HUB.ensure_exit(cid)
        HUB.container(cid, "stop")

    _safe(run)


def exited(task: exec_pb2.Task | None) -> None:
    """A task read after its exit (a removal, a stop): its ``die``, unless already reported."""
    _safe(lambda: HUB.exited_task(task))


def exited_all(tasks: Iterable[exec_pb2.Task]) -> None:
    for task in tasks:
        exited(task)


def destroyed(ids: Iterable[str]) -> None:
    for cid in ids:
        container(cid, "destroy")


def renamed(record: graph_pb2.Container, new_name: str) -> None:
    """``rename`` with the new name and ``oldName``; the new name is remembered."""
    def run() -> None:
        renamed_record = graph_pb2.Container()
        renamed_record.CopyFrom(record)
        renamed_record.name = new_name
        HUB.remember(renamed_record)
        HUB.container(record.id, "rename", oldName="/" + record.name.lstrip("/"))

    _safe(run)


def image(image_id: str, action: str, name: str = "", labels: Mapping[str, str] | None = None) -> None:
    """An image event: ``image_id`` (or the reference, for pull and push) and its name."""
    attrs = dict(labels or {})
    attrs["name"] = name or image_id
    _safe(lambda: HUB.publish(Type.EVENT_TYPE_IMAGE, action, image_id, attrs))


def network(network_id: str, action: str, name: str, driver: str = "bridge", **attributes: str) -> None:
    attrs = {"name": name, "type": driver or "bridge", **attributes}
    if action == "destroy":
        HUB.forget_network(name)  # a network made again under this name has a new id
    _safe(lambda: HUB.publish(Type.EVENT_TYPE_NETWORK, action, network_id, attrs))


def volume(name: str, action: str, driver: str = "local", **attributes: str) -> None:
    attrs = {"driver": driver or "local", **attributes}
    _safe(lambda: HUB.publish(Type.EVENT_TYPE_VOLUME, action, name, attrs))


def exec_started(cid: str, exec_id: str, cmd: list[str]) -> None:
    """``exec_create: CMD`` and ``exec_start: CMD`` (Docker's actions carry the command line)."""
    line = " ".join(cmd)
    exec_event(cid, f"exec_create: {line}", execID=exec_id)
    exec_event(cid, f"exec_start: {line}", execID=exec_id)


def exec_event(cid: str, action: str, **attributes: str) -> None:
    """``exec_create: CMD``, ``exec_start: CMD``, ``exec_die`` (attributes execID, exitCode)."""
    _safe(lambda: HUB.container(cid, action, **attributes))


# --- images, networks, volumes: helpers that read what the event needs -------------------------


def familiar(ref: str) -> str:
    """Docker's FamiliarString: ``docker.io/library/busybox`` -> ``busybox:latest``."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if ref.startswith(prefix):
            ref = ref[len(prefix):]
            break
    if "@" not in ref and ":" not in ref.rsplit("/", 1)[-1] and not ref.startswith("sha256:"):
        ref += ":latest"
    return ref


def image_of(img: types_pb2.Image, action: str) -> None:
    image(img.id, action, name=img.id, labels=img.config.labels)


def image_id(graph: Any, ref: str) -> str:
    """The id of the image ``ref`` names ("" when none)."""
    try:
        return str(graph.get_image(ref).id)
    except Exception:
        return ""


def image_removed(img_id: str, items: Iterable[types_pb2.ImageDeleteItem]) -> None:
    """As Docker: ``untag`` per removed reference, ``delete`` when the image itself went."""
    for item in items:
        if item.WhichOneof("item") == "untagged":
            image(img_id or item.untagged, "untag", name=img_id or item.untagged)
        elif item.deleted == img_id or (not img_id and item.deleted.startswith("sha256:")):
            image(item.deleted, "delete", name=item.deleted)


def image_ref(reference: str, action: str, img: types_pb2.Image | None = None) -> None:
    """``pull``/``push``: the reference is the actor, its name without the tag the ``name``."""
    ref = familiar(reference)
    image(ref, action, name=_strip_tag(ref), labels=img.config.labels if img is not None else None)


def image_tagged(graph: Any, target: str) -> None:
    def run() -> None:
        img = graph.get_image(target)
        image(img.id, "tag", name=familiar(target), labels=img.config.labels)

    _safe(run)


def images_saved(graph: Any, refs: Iterable[str]) -> None:
    for ref in refs:
        found = image_id(graph, ref)
        if found:
            image(found, "save", name=found)


def images_loaded(images: Iterable[types_pb2.Image]) -> None:
    for img in images:
        image_of(img, "load")


def committed(request: api_pb2.CommitContainerRequest, img: types_pb2.Image) -> None:
    container(request.container, "commit", comment=request.message, imageID=img.id,
              imageRef=familiar(request.reference) if request.reference else "")


def network_record(net: Any, ref: str) -> types_pb2.Network | None:
    from skiff.net.v1 import net_pb2

    try:
        return net.network_call("InspectNetwork", net_pb2.InspectNetworkRequest(ref=ref)).network  # type: ignore[no-any-return]
    except Exception:
        return None


def network_records(net: Any) -> list[types_pb2.Network]:
    from skiff.net.v1 import net_pb2

    try:
        return list(net.network_call("ListNetworks", net_pb2.ListNetworksRequest()).networks)
    except Exception:
        return []


def network_of(net: Any, ref: str, action: str, **attributes: str) -> None:
    found = network_record(net, ref)
    if found is not None:
        network(found.id, action, found.name, found.driver, **attributes)


def network_removed(known: types_pb2.Network | None, removed_id: str) -> None:
    if known is not None:
        network(removed_id or known.id, "destroy", known.name, known.driver)


def networks_pruned(known: Iterable[types_pb2.Network], names: Iterable[str]) -> None:
    by_name = {n.name: n for n in known}
    for name in names:
        found = by_name.get(name)
        if found is not None:
            network(found.id, "destroy", found.name, found.driver)


def volumes_pruned(names: Iterable[str]) -> None:
    for name in names:
        volume(name, "destroy")
