"""graphsvc's domain facade: containers as the GraphDB records them, over the image store.

Creating a container is one unit here: resolve the image, merge its defaults
into the user's configuration (Docker's rules), store the record under a unique
name with its links, and prepare its writable layer. If a later step fails the
earlier ones are undone, so a failed create leaves nothing behind.

The container's configuration is stored as the JSON form of the public
``ContainerConfig``/``HostConfig`` messages, so nothing the user asked for is
lost between versions of the engine.
"""

from __future__ import annotations

import builtins
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from skiff.common import mounts as mounts_mod
from skiff.common import trace
from skiff.common.errors import NO_COMMAND, InvalidArgument, NotFound, SkiffError
from skiff.common.faults import crash_point
from skiff.graphsvc.graphdb import ContainerRecord, GraphDB, Link
from skiff.graphsvc.images import ImageStore
from skiff.graphsvc.layers import LayerStore, Mount
from skiff.graphsvc.volumes import VolumeStore
from skiff.types.v1 import types_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Container:
    record: ContainerRecord
    config: types_pb2.ContainerConfig
    host_config: types_pb2.HostConfig
    path: str
    args: list[str]
    links: list[Link]
    mounts: list[types_pb2.MountPoint] = field(default_factory=list)
    #: the restart manager's bookkeeping, as the JSON form of graph.v1.RestartState
    restart_state: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        return self.record.id


def _env_merge(image_env: list[str], user_env: list[str]) -> list[str]:
    merged: dict[str, str] = {}
    for item in [*image_env, *user_env]:
        key = item.split("=", 1)[0]
        merged.pop(key, None)  # a later value wins and moves to the end, as Docker does
        merged[key] = item
    return list(merged.values())


def _port_key(port: str) -> str:
    """``80`` -> ``80/tcp``: the form of ExposedPorts keys."""
    return port if "/" in port else f"{port}/tcp"


def merge_image_defaults(user: types_pb2.ContainerConfig, image_config: dict[str, Any]) -> tuple[
        types_pb2.ContainerConfig, list[str]]:
    """Docker's create-time merge; returns the stored config and the command line."""
    img = image_config.get("config") or {}
    cfg = types_pb2.ContainerConfig()
    cfg.CopyFrom(user)
    if user.HasField("entrypoint"):
        entrypoint = list(user.entrypoint.values)
        # --entrypoint resets the image's CMD too; the user's own command still applies
        cmd = list(user.cmd.values) if user.HasField("cmd") else []
    else:
        entrypoint = list(img.get("Entrypoint") or [])
        cmd = list(user.cmd.values) if user.HasField("cmd") and user.cmd.values else list(img.get("Cmd") or [])
    cfg.entrypoint.values[:] = entrypoint
    cfg.cmd.values[:] = cmd
    cfg.env[:] = _env_merge(list(img.get("Env") or []), list(user.env))
    cfg.working_dir = user.working_dir or img.get("WorkingDir") or ""
    cfg.user = user.user or img.get("User") or ""
    # The image's EXPOSE and the user's --expose / -p ports (what -P publishes), image's first.
    exposed = [_port_key(p) for p in [*(img.get("ExposedPorts") or {}), *user.exposed_ports]]
    cfg.exposed_ports[:] = list(dict.fromkeys(exposed))
    merge_healthcheck(cfg, img.get("Healthcheck"))
    cfg.stop_signal = user.stop_signal or img.get("StopSignal") or ""
    for key, value in (img.get("Labels") or {}).items():  # the image's labels, the user's win
        if key not in user.labels and isinstance(value, str):
            cfg.labels[key] = value
    argv = entrypoint + cmd
    if not argv:
        raise InvalidArgument("No command specified", reason=NO_COMMAND)
    return cfg, argv


def merge_healthcheck(cfg: types_pb2.ContainerConfig, image_hc: dict[str, Any] | None) -> None:
    """Docker's merge: the user's fields win, the image's fill those left unset."""
    if not image_hc:
        return
    hc = cfg.healthcheck
    if not hc.test:
        hc.test[:] = list(image_hc.get("Test") or [])
    for ours, theirs in (("interval_ns", "Interval"), ("timeout_ns", "Timeout"),
                         ("start_period_ns", "StartPeriod"), ("retries", "Retries")):
        if not getattr(hc, ours) and image_hc.get(theirs):
            setattr(hc, ours, int(image_hc[theirs]))
    if not hc.test:
        cfg.ClearField("healthcheck")


def _parse_link(spec: str) -> tuple[str, str]:
    name, _, alias = spec.partition(":")
    name = name.lstrip("/")
    if not name:
        raise InvalidArgument(f"invalid link {spec!r}: expected name[:alias]")
    return name, alias or name


class Graph:
    """Containers over the GraphDB, images over the ImageStore, layers over the LayerStore."""

    def __init__(self, db: GraphDB, images: ImageStore, layers: LayerStore, driver_name: str,
                 data_root: Path | None = None, volumes: VolumeStore | None = None):
        self.data_root = data_root
        self.volumes = volumes
        self.db = db
        self.images = images
        self.layers = layers
        self.driver_name = driver_name
        #: id -> (the stored row and links it was made from, the Container): list() parses
        #: only what changed since the last call (ParseDict of 1000 configs is ~150 ms)
        self._listed: dict[str, tuple[tuple[object, ...], Container]] = {}
        #: this process's part of list_since's generation (the GraphDB counter starts at 0)
        self._epoch = os.urandom(8).hex()

    # -- containers ---------------------------------------------------------

    def create(self, name: str, config: types_pb2.ContainerConfig, host_config: types_pb2.HostConfig,
               ) -> tuple[Container, Mount]:
        if not config.image:
            raise InvalidArgument("an image is required")
        links = [_parse_link(s) for s in host_config.links]
        image_id, image_config = self.images.config_of(config.image)
        merged, argv = merge_image_defaults(config, image_config)
        wanted = mounts_mod.collect(host_config.binds, host_config.mounts)
        wanted += self._volumes_from(list(host_config.volumes_from), {m.destination for m in wanted})
        stored: dict[str, Any] = {
            "config": json_format.MessageToDict(merged, preserving_proto_field_name=True),
            "host_config": json_format.MessageToDict(host_config, preserving_proto_field_name=True),
            "path": argv[0],
            "args": argv[1:],
        }
        image_volumes = sorted((image_config.get("config") or {}).get("Volumes") or {})
        if name:  # a name in use fails before anything is made (checked again when stored)
            self.db.check_name_free(name)
        made: list[str] = []
        # The writable layer first, then the record with its root filesystem and layer chain in
        # one commit. A crash before the commit leaves a layer without a record, which the next
        # start-up removes (remove_orphan_container_layers). The layer's chain file is not
        # fsynced: the commit's fsync comes after it, and a chain file (or layer) a power cut
        # took is made again from the record at the next start-up (restore_container_layers).
        cid = secrets.token_hex(32)
        chain = list(reversed(image_config["rootfs"]["diff_ids"]))
        with trace.span("writable layer"):
            mount = self.layers.prepare(cid, chain, durable=False)
        # The description is deterministic: kept with the record for every later start.
        stored["rootfs"] = {"type": mount.type, "source": mount.source, "options": list(mount.options)}
        stored["layers"] = chain
        try:
            # Volumes are made and recorded as mounted under the GraphDB's lock: a `volume rm`
            # sees either no volume or a volume in use, never one about to be used.
            with self.db._lock:
                resolved = self._resolve_mounts(wanted, image_volumes, made)
                stored["mounts"] = [json_format.MessageToDict(m, preserving_proto_field_name=True)
                                    for m in resolved]
                with trace.span("record (commit)"):
                    record = self.db.create_container(ContainerRecord(
                        image_id=image_id, config=stored, id=cid, name=name, labels=dict(config.labels)))
        except BaseException:
            self.layers.release(cid)
            if self.volumes is not None:
                self.volumes.remove_anonymous(made)
            raise
        try:
            for child, alias in links:
                self.db.link(record.id, child, alias)
        except BaseException:
            self.db.delete(record.id, force=True)
            self.layers.release(record.id)
            if self.volumes is not None:
                self.volumes.remove_anonymous(made)
            raise
        if links:
            return self._container(record), mount
        # What get() would parse back from the stored JSON (no float fields: the round trip is exact).
        host = types_pb2.HostConfig()
        host.CopyFrom(host_config)
        return Container(record, merged, host, argv[0], list(argv[1:]), [], resolved), mount

    def _volumes_from(self, refs: list[str], taken: set[str]) -> list[types_pb2.MountPoint]:
        """``--volumes-from c[:ro|rw]``: c's binds and volumes (not tmpfs), where nothing else is mounted."""
        out = []
        for ref in refs:
            name, _, mode = ref.partition(":")
            if mode not in ("", "ro", "rw"):
                raise InvalidArgument(f"invalid mode for volumes-from: {mode}")
            for m in self.get(name).mounts:
                if m.type == "tmpfs" or m.destination in taken:
                    continue
                inherited = types_pb2.MountPoint()
                inherited.CopyFrom(m)
                if m.type == "bind":
                    inherited.name, inherited.source = m.source, ""  # resolved again below
                    inherited.create_host_path = False
                if mode:
                    inherited.read_only = mode == "ro"
                taken.add(m.destination)
                out.append(inherited)
        return out

    def _resolve_mounts(self, wanted: list[types_pb2.MountPoint], image_volumes: list[str],
                        made: list[str]) -> list[types_pb2.MountPoint]:
        """Binds as given; volumes made when missing (anonymous ones named here, listed in
        ``made``); an image VOLUME no mount covers becomes an anonymous volume, as Docker."""
        taken = {m.destination for m in wanted}
        out = list(wanted)
        for path in image_volumes:
            dest = mounts_mod.clean(path)
            if dest not in taken and dest != "/":
                out.append(types_pb2.MountPoint(type="volume", destination=dest))
                taken.add(dest)
        for m in out:
            if m.type == "bind":
                m.source = mounts_mod.clean(m.name)
                m.name = ""
                m.propagation = m.propagation or mounts_mod.DEFAULT_PROPAGATION
            elif m.type == "volume":
                if self.volumes is None:
                    raise InvalidArgument("volumes are not available in this engine")
                vol, new = self.volumes.ensure(m.name, labels=dict(m.volume_labels), anonymous=not m.name)
                if new:
                    made.append(vol.name)
                m.anonymous = vol.anonymous and not m.name
                m.name, m.source, m.driver = vol.name, vol.mountpoint, vol.driver
                m.ClearField("volume_labels")
            m.mode = m.mode or ""
        out.sort(key=mounts_mod.sort_key)
        return out

    def _container(self, record: ContainerRecord, links: builtins.list[Link] | None = None) -> Container:
        stored = record.config
        cfg = json_format.ParseDict(stored.get("config", {}), types_pb2.ContainerConfig(),
                                    ignore_unknown_fields=True)
        host = json_format.ParseDict(stored.get("host_config", {}), types_pb2.HostConfig(),
                                     ignore_unknown_fields=True)
        mounts = [json_format.ParseDict(m, types_pb2.MountPoint(), ignore_unknown_fields=True)
                  for m in stored.get("mounts", [])]
        return Container(record, cfg, host, stored.get("path", ""), list(stored.get("args", [])),
                         self.db.children(record.id) if links is None else list(links), mounts,
                         stored.get("restart_state"))

    def get(self, ref: str) -> Container:
        return self._container(self.db.get(ref))

    def list(self, filters: builtins.list[tuple[str, str]] | None = None) -> builtins.list[Container]:
        """Every container, or those the ``ps --filter`` keys of the GraphDB select."""
        rows, links = self.db.list_rows()
        return self._from_rows(rows, links, filters)

    def _from_rows(self, rows: builtins.list[dict[str, Any]], links: dict[str, builtins.list[Link]],
                   filters: builtins.list[tuple[str, str]] | None) -> builtins.list[Container]:
        from skiff.graphsvc.containerfilter import compile_filters

        previous = self._listed
        listed: dict[str, tuple[tuple[object, ...], Container]] = {}
        out = []
        for row in rows:
            edges = links.get(row["id"], [])
            key = (row["name"], row["image_id"], row["created"], row["config"], row["labels"], tuple(edges))
            hit = previous.get(row["id"])
            fresh = hit is not None and hit[0] == key
            container = hit[1] if hit is not None and fresh else self._container(self.db._record(row), edges)
            listed[row["id"]] = (key, container)
            out.append(container)
        self._listed = listed  # a concurrent list may win: either is a correct cache
        if filters:
            match = compile_filters(filters, self.images)
            out = [c for c in out if match(c.record)]
        return out

    def list_since(self, since: str = "", filters: builtins.list[tuple[str, str]] | None = None
                   ) -> tuple[str, builtins.list[Container] | None]:
        """(generation, containers as list() gives them), or (generation, None) when
        ``since`` is that generation still: no container or link was written since."""
        with self.db.locked():  # reentrant: the generation and the rows agree
            generation = f"{self._epoch}.{self.db.generation}"
            if since == generation:
                return generation, None
            rows, links = self.db.list_rows()
        return generation, self._from_rows(rows, links, filters)

    def sizes(self, refs: builtins.list[str]) -> builtins.list[tuple[str, int, int]]:
        """(id, writable layer bytes, root filesystem bytes) of each container (all when empty)."""
        records = [self.db.get(r) for r in refs] if refs else self.db.list()
        out = []
        for record in records:
            try:
                image_size = self.images.get(record.image_id).size
            except NotFound:
                image_size = 0
            rw = self.layers.container_size(record.id)
            out.append((record.id, rw, rw + image_size))
        return out

    def delete_link(self, parent: str, name: str) -> None:
        self.db.unlink(parent, name)

    def rootfs(self, container_id: str) -> tuple[Mount, str]:
        """The prepared root filesystem, and the host path of the writable layer."""
        record = self.db.get(container_id)
        desc = record.config.get("rootfs")
        if not desc:
            raise NotFound(f"no root filesystem prepared for container {record.id}")
        mount = Mount(type=desc["type"], source=desc["source"], options=list(desc["options"]))
        upper = next((o.split("=", 1)[1] for o in mount.options if o.startswith("upperdir=")), mount.source)
        return mount, upper

    def update_host_config(self, container_id: str, host_config: types_pb2.HostConfig) -> Container:
        """Replaces the stored HostConfig (`skiff update`); the rest of the record is kept."""
        return self._update(container_id, "host_config",
                            json_format.MessageToDict(host_config, preserving_proto_field_name=True))

    def set_restart_state(self, container_id: str, state: dict[str, Any]) -> Container:
        return self._update(container_id, "restart_state", state)

    def _update(self, ref: str, key: str, value: dict[str, Any]) -> Container:
        with self.db.locked() as db:
            record = db.get(ref)
            stored = dict(record.config)
            stored[key] = value
            return self._container(db.update_config(record.id, stored))

    def rename(self, ref: str, new_name: str) -> Container:
        return self._container(self.db.rename(ref, new_name))

    def delete(self, container_id: str, force: bool = False, remove_volumes: bool = False) -> None:
        """Record and links first (the check that may refuse), then the writable layer;
        with ``remove_volumes`` its anonymous volumes no other container uses."""
        record = self.db.delete(container_id, force=force)
        try:
            self.layers.release(record.id)
        except Exception:  # the record is gone; a stale layer is only disk space
            log.exception("releasing the layer of %s", record.id)
        if remove_volumes and self.volumes is not None:
            names = [m["name"] for m in record.config.get("mounts", [])
                     if m.get("type") == "volume" and m.get("anonymous")]
            try:
                self.volumes.remove_anonymous(names)
            except Exception:  # the container is gone; a stale volume shows in `volume ls`
                log.exception("removing the volumes of %s", record.id)

    def get_many(self, refs: builtins.list[str]) -> builtins.list[Container | SkiffError]:
        """:meth:`get` of each reference, in order: the container or why it did not resolve."""
        return [r if isinstance(r, SkiffError) else self._container(r) for r in self.db.get_many(refs)]

    def delete_many(self, container_ids: builtins.list[str], force: bool = False, remove_volumes: bool = False
                    ) -> dict[str, SkiffError]:
        """:meth:`delete` of many: the records in one transaction, then their writable layers
        (a crash in between leaves layers without a record: removed at the next start-up)
        and anonymous volumes. The ones not deleted, with why."""
        records, failed = self.db.delete_many(container_ids, force=force)
        crash_point("graphsvc:delete-containers:committed")
        names: builtins.list[str] = []
        for record in records:
            try:
                self.layers.release(record.id)
            except Exception:  # the record is gone; a stale layer is only disk space
                log.exception("releasing the layer of %s", record.id)
            names += [m["name"] for m in record.config.get("mounts", [])
                      if m.get("type") == "volume" and m.get("anonymous")]
        if remove_volumes and names and self.volumes is not None:
            try:
                self.volumes.remove_anonymous(names)
            except Exception:  # the containers are gone; a stale volume shows in `volume ls`
                log.exception("removing the volumes of %d containers", len(records))
        return failed

    def links(self, ref: str, parents: bool) -> builtins.list[Link]:
        return self.db.parents(ref) if parents else self.db.children(ref)


def overlay_supported() -> bool:
    try:
        with open("/proc/filesystems") as f:
            return any(line.split()[-1] == "overlay" for line in f if line.strip())
    except OSError:
        return False


def remove_orphan_layers(images: ImageStore, layers: LayerStore) -> list[str]:
    """At start-up: drop unpacked layers no image and no container uses (a pull or commit cut
    short between a layer and its image). Nothing else runs yet, so nothing can be adopting one."""
    used = {lid for image in images.list() for lid in image.layers}
    dropped = []
    for layer_id in layers.layer_ids():
        if layer_id in used or layers.users(layer_id):
            continue
        try:
            layers.remove(layer_id)
        except Exception:  # never fatal: a stale layer is only disk space
            log.exception("removing orphan layer %s", layer_id)
            continue
        images.content.unlink_layer(layer_id)
        dropped.append(layer_id)
    return dropped


def restore_container_layers(db: GraphDB, layers: LayerStore) -> builtins.list[str]:
    """At start-up, first: the writable layer (and its chain file) of each record that has its
    chain (``layers``, stored by creates that do not fsync the chain file), where a power cut
    took it. Nothing else runs yet."""
    restored = []
    for record in db.list():
        chain = record.config.get("layers")
        if not chain:
            continue
        try:
            if layers.restore_chain(record.id, list(chain)):
                restored.append(record.id)
        except Exception:  # never fatal: the container's start reports what is missing
            log.exception("restoring the writable layer of %s", record.id)
    return restored


def remove_orphan_container_layers(db: GraphDB, layers: LayerStore) -> builtins.list[str]:
    """At start-up: drop writable layers of containers without a record (a removal cut
    short between its commit and the layer's rename). Nothing else runs yet."""
    known = {r.id for r in db.list()}
    dropped = []
    for cid in layers.container_ids():
        if cid in known:
            continue
        try:
            layers.release(cid)
        except Exception:  # never fatal: a stale layer is only disk space
            log.exception("removing the orphan writable layer of %s", cid)
            continue
        dropped.append(cid)
    return dropped


def open_graph(data_root: Path) -> Graph:
    """The store under ``<data-root>``: overlay where the kernel has it, else vfs."""
    from skiff.graphsvc import layers as layers_mod

    root = data_root / "graph"
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = GraphDB(root / "graph.db")
    caps = {}
    # SKIFF_LAYER_MAX_BYTES: the cap on a layer's uncompressed tar (default 8 GiB); the tests lower it.
    if os.environ.get("SKIFF_LAYER_MAX_BYTES"):
        caps["max_bytes"] = int(os.environ["SKIFF_LAYER_MAX_BYTES"])
    driver: LayerStore
    if overlay_supported():
        driver, name = layers_mod.OverlayDriver(root, **caps), "overlay"
    else:
        driver, name = layers_mod.VfsDriver(root, **caps), "vfs"
    images = ImageStore(root, driver, db)
    for cid in restore_container_layers(db, driver):  # before the sweeps: they read the chains
        log.info("restored the layer chain of %s (lost in a crash after its create)", cid)
    for layer_id in remove_orphan_layers(images, driver):
        log.info("removed layer %s: no image or container uses it (an interrupted pull?)", layer_id)
    for cid in remove_orphan_container_layers(db, driver):
        log.info("removed the writable layer of %s: no container record (an interrupted rm?)", cid)
    for digest in images.content.remove_unreferenced():
        log.info("removed blob %s: no layer was made from it (an interrupted pull?)", digest)
    return Graph(db, images, driver, name, data_root, VolumeStore(db, data_root / "volumes"))
