"""The records of containers this gateway has just created, so that their start and wait need
not ask graphsvc for them again (one call less on the way of `create` + `start` + `wait`).

A record is what CreateContainer returned; it is given (a copy) to a GetContainer by its full
id or its name until the first write to any container record goes through this gateway (rename, update,
restart state, removal, links: anything but a read clears all), or after ``ttl`` seconds.
Records only change through the gateway (graphsvc is written by no one else; skiffd runs one
gateway), so a kept record is the stored one. A create that overlaps another write keeps
nothing: that write may concern the new container (by its name) and land after it.
A GetContainer by id prefix, and every other read, goes to graphsvc.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from typing import Any

from skiff.graph.v1 import graph_pb2
from skiff.types.v1 import types_pb2

_FULL_ID = re.compile(r"[0-9a-f]{64}\Z")

#: GraphBackend methods that write no container record (everything else clears the records).
READS = frozenset({
    "get_container", "get_containers", "list_containers", "list_containers_since", "get_rootfs",
    "container_sizes", "list_links", "list_images", "get_image", "get_store_info", "pull_image",
    "push_image", "import_image", "tag_image", "remove_image",
})


class FreshRecords:
    """A GraphBackend that keeps the records of the containers created through it (see module)."""

    def __init__(self, graph: Any, keep: int = 256, ttl: float = 30.0,
                 clock: Any = time.monotonic):
        self._graph = graph
        self._keep = keep
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        #: id -> (until, record, its rootfs)
        self._records: OrderedDict[str, tuple[float, graph_pb2.Container, types_pb2.Mount]] = OrderedDict()
        self._names: dict[str, str] = {}  # name -> id, of the kept records
        #: containers created here that no start has been tried on yet: they have no task (only
        #: the gateway's start makes one). Not forgotten by writes: they change no task.
        self._unstarted: OrderedDict[str, None] = OrderedDict()
        self._writes = 0  # writes begun
        self._writing = 0  # writes in progress

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._graph, name)
        if name in READS or name.startswith("_") or not callable(attr):
            return attr

        def write(*args: Any, **kwargs: Any) -> Any:
            self._begin()
            try:
                return attr(*args, **kwargs)
            finally:
                self._end()

        return write

    def _begin(self) -> None:
        with self._lock:
            self._writes += 1
            self._writing += 1
            self._forget()

    def _end(self) -> None:
        with self._lock:
            self._writing -= 1
            self._forget()

    def _forget(self) -> None:
        self._records.clear()
        self._names.clear()

    def create_container(self, req: graph_pb2.CreateContainerRequest) -> graph_pb2.CreateContainerResponse:
        """A create changes no other record: it is not a write for the others. Its own record is
        kept when no other write was in progress at any time during it."""
        with self._lock:
            before, quiet = self._writes, self._writing == 0
        resp: graph_pb2.CreateContainerResponse = self._graph.create_container(req)
        with self._lock:
            self._unstarted[resp.container.id] = None
            while len(self._unstarted) > self._keep:
                self._unstarted.popitem(last=False)
            if quiet and self._writes == before and self._writing == 0:
                record = graph_pb2.Container()
                record.CopyFrom(resp.container)
                rootfs = types_pb2.Mount()
                rootfs.CopyFrom(resp.rootfs)
                self._records[record.id] = (self._clock() + self._ttl, record, rootfs)
                self._names[record.name] = record.id
                while len(self._records) > self._keep:
                    self._names.pop(self._records.popitem(last=False)[1][1].name, None)
        return resp

    def _hit(self, ref: str) -> tuple[float, graph_pb2.Container, types_pb2.Mount] | None:
        """The kept record ``ref`` names as graphsvc would resolve it: a full id, else a name
        (names are unique; a 64-hex ref may be another container's id, so only as an id)."""
        hit = self._records.get(ref)
        if hit is None and not _FULL_ID.match(ref):
            cid = self._names.get(ref[1:] if ref.startswith("/") else ref)
            hit = self._records.get(cid) if cid is not None else None
        return hit if hit is not None and hit[0] > self._clock() else None

    def get_container(self, ref: str) -> graph_pb2.Container:
        with self._lock:
            hit = self._hit(ref)
            if hit is not None:
                record = graph_pb2.Container()
                record.CopyFrom(hit[1])
                return record
        found: graph_pb2.Container = self._graph.get_container(ref)
        return found

    def rootfs(self, container_id: str) -> types_pb2.Mount | None:
        """The rootfs CreateContainer returned with a kept record (what GetRootfs answers)."""
        with self._lock:
            hit = self._records.get(container_id)
            if hit is None or hit[0] <= self._clock() or not hit[2].type:
                return None
            rootfs = types_pb2.Mount()
            rootfs.CopyFrom(hit[2])
            return rootfs

    def take_unstarted(self, container_id: str) -> bool:
        """True (once) when ``container_id`` was created here and no start was tried since:
        it has no task. A start calls this before it tries."""
        with self._lock:
            return self._unstarted.pop(container_id, 0) is None

    def has(self, ref: str) -> bool:
        """A GetContainer of ``ref`` is answered here."""
        with self._lock:
            return self._hit(ref) is not None

    def kept(self) -> int:
        """Records kept now (for tests)."""
        with self._lock:
            return len(self._records)
