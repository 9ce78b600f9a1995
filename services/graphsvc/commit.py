"""``skiff commit``, ``diff``, ``export`` and ``history``: containers' layers seen as images.

``commit`` writes the upperdir as a layer tar into the content store (so the
new layer can be pushed and saved as the very bytes of its DiffID), unpacks it
through the safe extractor like any other layer, and writes a config: the
image's, with the container's run configuration, ``--change`` applied, one
more DiffID and one more history entry. The container keeps running on its
own writable layer; nothing is paused.

``export`` mounts the overlay read-only, upperdir as the topmost lowerdir (so
the running container's upper and work dirs are not touched), in a private
mount namespace of a short-lived ``unshare`` child that streams ``tar``: the
mount disappears with the child, whatever happens, and never shows on the host.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skiff.common.errors import FailedPrecondition, InvalidArgument
from skiff.graphsvc import changes as changes_mod
from skiff.graphsvc import diff as diff_mod
from skiff.graphsvc import reference
from skiff.graphsvc.content import BlobRef
from skiff.graphsvc.graph import Container, Graph, _port_key
from skiff.graphsvc.graphdb import now_rfc3339
from skiff.graphsvc.images import Image

CHUNK = 1 << 20
EMPTY_LAYER = "<missing>"


@dataclass(frozen=True)
class HistoryItem:
    id: str
    created: str
    created_by: str
    size: int
    comment: str
    tags: list[str]


class Snapshots:
    def __init__(self, graph: Graph, tmp_dir: Path):
        self.graph = graph
        self.images = graph.images
        self.tmp_dir = tmp_dir

    def _dirs(self, container: Container) -> tuple[Path, list[Path]]:
        mount, upper = self.graph.rootfs(container.id)
        if mount.type != "overlay":
            raise FailedPrecondition(f"the {self.graph.driver_name} driver keeps no separate writable layer")
        lower = next(o.split("=", 1)[1] for o in mount.options if o.startswith("lowerdir="))
        return Path(upper), [Path(p) for p in lower.split(":")]

    def changes(self, ref: str) -> list[tuple[str, str]]:
        upper, lowers = self._dirs(self.graph.get(ref))
        return diff_mod.changes(upper, lowers)

    def commit(self, ref: str, new_ref: str, message: str, author: str, change_lines: list[str]) -> Image:
        container = self.graph.get(ref)
        parsed = reference.parse(new_ref) if new_ref else None
        if parsed and parsed.digest:
            raise InvalidArgument(f"refusing to create a tag with a digest reference: {new_ref!r}")
        upper, _ = self._dirs(container)
        image = self.images.get(container.record.image_id)
        cfg = self._run_config(container, image, change_lines)
        with self.images.lock:
            with self.images.content.writer() as w:
                diff_mod.write_layer(upper, w)  # type: ignore[arg-type]
                size = w.size
                digest = w.commit()
            with self.images.content.open(digest) as f:
                layer = self.images.layers.create_layer_from_archive(f)
            if self.images.content.blob_for(layer.id) is None:
                self.images.content.link(layer.id, BlobRef(digest, "application/vnd.oci.image.layer.v1.tar", size))
            elif self.images.content.blob_for(layer.id) != BlobRef(digest, "application/vnd.oci.image.layer.v1.tar",
                                                                   size):
                self.images.content.remove(digest)
            config = copy.deepcopy(image.config)
            created = now_rfc3339()
            config["created"] = created
            config["config"] = cfg
            config["container"] = container.id
            config["parent"] = image.id
            if author:
                config["author"] = author
            else:
                config.pop("author", None)
            config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
            config["rootfs"]["diff_ids"] = [*config["rootfs"].get("diff_ids", []), layer.id]
            entry: dict[str, Any] = {"created": created,
                                     "created_by": " ".join([container.path, *container.args]).strip()}
            if author:
                entry["author"] = author
            if message:
                entry["comment"] = message
            config["history"] = [*(config.get("history") or []), entry]
            image_id = self.images._write_config(config)
            if parsed:
                self.images.db.set_tag(str(parsed), image_id)
        return self.images.get(image_id)

    @staticmethod
    def _run_config(container: Container, image: Image, change_lines: list[str]) -> dict[str, Any]:
        c = container.config
        base: dict[str, Any] = dict(image.config.get("config") or {})
        base["Env"] = list(c.env) or base.get("Env") or []
        base["Cmd"] = list(c.cmd.values) if c.HasField("cmd") else base.get("Cmd")
        base["Entrypoint"] = list(c.entrypoint.values) if c.HasField("entrypoint") else base.get("Entrypoint")
        base["WorkingDir"] = c.working_dir or base.get("WorkingDir", "")
        base["User"] = c.user or base.get("User", "")
        if c.labels:
            base["Labels"] = dict(c.labels)
        if c.stop_signal:
            base["StopSignal"] = c.stop_signal
        if c.exposed_ports:  # the container's (its image's merged with --expose), as Docker commits them
            base["ExposedPorts"] = {_port_key(p): {} for p in c.exposed_ports}
        if c.HasField("healthcheck") and c.healthcheck.test:
            hc = c.healthcheck
            base["Healthcheck"] = {k: v for k, v in (
                ("Test", list(hc.test)), ("Interval", hc.interval_ns), ("Timeout", hc.timeout_ns),
                ("StartPeriod", hc.start_period_ns), ("Retries", hc.retries)) if v}
        ch = changes_mod.parse(change_lines, base["Env"])
        if ch is not None:
            if ch.cmd is not None:
                base["Cmd"] = ch.cmd
            if ch.entrypoint is not None:
                base["Entrypoint"] = ch.entrypoint
                if ch.cmd is None:
                    base["Cmd"] = None  # a new ENTRYPOINT resets CMD, as in a Dockerfile
            if ch.env is not None:
                base["Env"] = ch.env
            if ch.workdir is not None:
                base["WorkingDir"] = ch.workdir
            if ch.user is not None:
                base["User"] = ch.user
            if ch.volumes:
                base["Volumes"] = dict(base.get("Volumes") or {}) | {v: {} for v in ch.volumes}
            if ch.exposed:
                base["ExposedPorts"] = {**(base.get("ExposedPorts") or {}), **{p: {} for p in ch.exposed}}
            if ch.healthcheck is not None:
                base["Healthcheck"] = ch.healthcheck
            if ch.labels:
                base["Labels"] = {**(base.get("Labels") or {}), **ch.labels}
            if ch.stop_signal:
                base["StopSignal"] = ch.stop_signal
            if ch.onbuild:
                base["OnBuild"] = [*(base.get("OnBuild") or []), *ch.onbuild]
        return base

    def export(self, ref: str) -> Iterator[bytes]:
        """The merged filesystem as a tar, streamed from ``tar`` in a private mount namespace."""
        upper, lowers = self._dirs(self.graph.get(ref))
        if shutil.which("unshare") is None or shutil.which("tar") is None:
            raise FailedPrecondition("export needs unshare(1) and tar(1)")
        mnt = Path(tempfile.mkdtemp(prefix="export-", dir=self.tmp_dir))
        lowerdir = ":".join(str(p) for p in [upper, *lowers])
        script = ('mount -t overlay overlay -o "ro,lowerdir=$1" "$2" && cd "$2" && '
                  'find . -mindepth 1 -printf "%P\\0" | '
                  'exec tar --numeric-owner --xattrs --xattrs-include="*" --no-recursion --null -T - -cf -')
        proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "export", lowerdir, str(mnt)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        try:
            assert proc.stdout is not None
            while chunk := proc.stdout.read(CHUNK):
                yield chunk
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            if proc.wait() != 0:
                raise FailedPrecondition(f"export failed: {err.strip()}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()
            try:
                mnt.rmdir()
            except OSError:
                pass

    def history(self, ref: str) -> list[HistoryItem]:
        """Docker's ``history``: newest first; layers matched to the non-empty entries in order."""
        image = self.images.get(ref)
        entries = image.config.get("history") or []
        diff_ids = list(image.layers)
        sizes = []
        for d in diff_ids:
            try:
                sizes.append(self.images.layers.get(d).size)
            except Exception:
                sizes.append(0)
        items: list[HistoryItem] = []
        layer_i = 0
        for e in entries:
            size = 0
            if not e.get("empty_layer") and layer_i < len(sizes):
                size = sizes[layer_i]
                layer_i += 1
            items.append(HistoryItem(EMPTY_LAYER, e.get("created", ""), e.get("created_by", ""), size,
                                     e.get("comment", ""), []))
        if not items:
            items.append(HistoryItem(EMPTY_LAYER, image.created, "", image.size, "", []))
        top = items[-1]
        items[-1] = HistoryItem(image.id, top.created, top.created_by, top.size, top.comment, image.repo_tags)
        return list(reversed(items))


