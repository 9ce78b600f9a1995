"""Image metadata: OCI-style configs addressed by their sha256, and tags.

An image is its config JSON (``architecture``, ``os``, ``config``, ``rootfs``,
``history``, ``created``); the sha256 of the exact stored bytes is the image
id, so an id can always be re-verified against the file. Tags live in the
GraphDB (``tags`` table) so that retagging is one transaction.

On-disk layout::

    <root>/images/sha256/<hex>     config JSON, written tmp + fsync + rename
    <root>/images/tmp/             staging for the above
    <root>/blobs/                  the content store (see content.py)

A pulled image's config is stored as the registry's bytes, unchanged, so its id
is the one Docker computes. Repo digests (``name@sha256:…``, the manifest a
pull or push saw) live in the same ``tags`` table as the tags; a ``@`` tells
them apart.

``rmi`` follows Docker's ``ImageDelete``: removing one of several tags only
untags; removing the last tag, or removing by id, deletes the image and then
every layer no other image uses. Containers using the image (from the
GraphDB) make that a Conflict unless forced. Whether a user is *running* is
execsvc's knowledge: the apiserver must refuse ``rmi -f`` of an image in use
by a running container before calling here.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import platform
import re
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from skiff.common.errors import (
    IMAGE_IN_USE,
    IMAGE_NOT_FOUND,
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from skiff.graphsvc import reference
from skiff.graphsvc.content import BlobRef, ContentStore
from skiff.graphsvc.graphdb import GraphDB, now_rfc3339
from skiff.graphsvc.layers import LayerStore

DEFAULT_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
DEFAULT_CMD = ["sh"]
MIN_PREFIX = 4
_HEX = re.compile(r"^[0-9a-f]+$")
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "ppc64le": "ppc64le",
         "s390x": "s390x", "riscv64": "riscv64"}


@dataclass(frozen=True)
class ImageChanges:
    """``skiff import --change`` values; ``None`` keeps the default."""

    cmd: list[str] | None = None
    entrypoint: list[str] | None = None
    env: list[str] | None = None
    workdir: str | None = None
    user: str | None = None
    #: VOLUME paths, added to the image's
    volumes: list[str] | None = None
    #: ``EXPOSE 80 53/udp``: ports added to the image's ExposedPorts (``80/tcp``).
    exposed: list[str] | None = None
    #: HEALTHCHECK, in the image config's form ({"Test": [...], "Interval": ns, ...})
    healthcheck: dict[str, Any] | None = None
    #: ``LABEL k=v``: added to the image's Labels
    labels: dict[str, str] | None = None
    #: ``STOPSIGNAL``, as written (``SIGUSR1``)
    stop_signal: str | None = None
    #: ``ONBUILD`` triggers, kept in the config for a builder
    onbuild: list[str] | None = None


@dataclass(frozen=True)
class Image:
    """An image as listed. ``layers`` are DiffIDs base first; ``config`` is the whole OCI config."""

    id: str
    repo_tags: list[str]
    created: str
    size: int
    layers: list[str]
    config: dict[str, Any] = field(default_factory=dict)
    repo_digests: list[str] = field(default_factory=list)


def _not_found(ref: str) -> NotFound:
    return NotFound(f"No such image: {ref}", reason=IMAGE_NOT_FOUND)


def _short(image_or_container_id: str) -> str:
    return image_or_container_id.removeprefix("sha256:")[:12]


def build_config(
    diff_ids: list[str], changes: ImageChanges | None, message: str, created: str
) -> dict[str, Any]:
    ch = changes or ImageChanges()
    history: dict[str, Any] = {"created": created, "created_by": "skiff import"}
    if message:
        history["comment"] = message
    config: dict[str, Any] = {
        "architecture": _ARCH.get(platform.machine(), platform.machine()),
        "os": "linux",
        "created": created,
        "config": {
            "Env": list(ch.env) if ch.env is not None else list(DEFAULT_ENV),
            "Cmd": list(ch.cmd) if ch.cmd is not None else list(DEFAULT_CMD),
            "Entrypoint": list(ch.entrypoint) if ch.entrypoint is not None else None,
            "WorkingDir": ch.workdir or "",
            "User": ch.user or "",
            **({"ExposedPorts": {p: {} for p in ch.exposed}} if ch.exposed else {}),
            **({"Healthcheck": ch.healthcheck} if ch.healthcheck is not None else {}),
            **({"Labels": dict(ch.labels)} if ch.labels else {}),
            **({"StopSignal": ch.stop_signal} if ch.stop_signal else {}),
            **({"OnBuild": list(ch.onbuild)} if ch.onbuild else {}),
        },
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [history],
    }
    if ch.volumes:
        config["config"]["Volumes"] = {v: {} for v in ch.volumes}
    return config


class ImageStore:
    """Images and tags over a :class:`LayerStore` and the :class:`GraphDB`.

    One lock serialises imports and removals: otherwise removing the last
    image of a layer could delete it between a concurrent import finding the
    layer already unpacked and that import writing its config.
    """

    def __init__(self, root: Path | str, layers: LayerStore, db: GraphDB):
        self.dir = Path(root) / "images" / "sha256"
        self.tmp = Path(root) / "images" / "tmp"
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        for leftover in self.tmp.iterdir():
            leftover.unlink()
        self.layers = layers
        self.db = db
        self.content = ContentStore(root)
        self._lock = threading.RLock()
        #: image id -> its parsed config, for creates (an id names the config's bytes: they never change)
        self._configs: dict[str, dict[str, Any]] = {}

    @property
    def lock(self) -> threading.RLock:
        """Held by a pull between unpacking layers and writing the config (see the class docstring)."""
        return self._lock

    # -- writing ------------------------------------------------------------

    def import_archive(
        self,
        stream: IO[bytes],
        ref: str | None = None,
        changes: ImageChanges | None = None,
        message: str = "",
    ) -> Image:
        """``skiff import``: one layer from a tar (plain or gzip), a config, and an optional tag."""
        parsed = _tag_ref(ref) if ref else None  # fail before unpacking anything
        with self._lock, self.content.writer() as blob:
            # The tarball is kept as it came (plain or gzip): a push sends exactly the
            # bytes whose DiffID the config names.
            tee = _Tee(stream, blob)
            layer = self.layers.create_layer_from_archive(tee)  # type: ignore[arg-type]
            try:
                tee.drain()
                media = "application/vnd.oci.image.layer.v1.tar+gzip" if tee.gzip else \
                    "application/vnd.oci.image.layer.v1.tar"
                size = blob.size
                if self.content.blob_for(layer.id) is None:
                    self.content.link(layer.id, BlobRef(blob.commit(), media, size))
                config = build_config([layer.id], changes, message, now_rfc3339())
                image_id = self._write_config(config)
            except BaseException:
                if not self._images_using_layer(layer.id):
                    self.layers.remove(layer.id)
                raise
            if parsed:
                self.db.set_tag(str(parsed), image_id)
            return self._image(image_id)

    def _write_config(self, config: dict[str, Any]) -> str:
        return self._write_bytes(json.dumps(config, sort_keys=True, separators=(",", ":")).encode())

    def _write_bytes(self, data: bytes) -> str:
        hexid = hashlib.sha256(data).hexdigest()
        final = self.dir / hexid
        if not final.exists():
            tmp = self.tmp / uuid.uuid4().hex
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, final)
            finally:
                tmp.unlink(missing_ok=True)
            dfd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        return "sha256:" + hexid

    def has_image(self, image_id: str) -> bool:
        return (self.dir / image_id.removeprefix("sha256:")).is_file()

    def add_config(self, data: bytes) -> str:
        """Store a registry's config bytes unchanged; every layer must already be unpacked."""
        config = json.loads(data)
        for lid in config["rootfs"]["diff_ids"]:
            if not self.layers.exists(lid):
                raise FailedPrecondition(f"layer {lid} of the image is not unpacked")
        return self._write_bytes(data)

    def raw_config(self, image_id: str) -> bytes:
        try:
            return (self.dir / image_id.removeprefix("sha256:")).read_bytes()
        except FileNotFoundError:
            raise _not_found(image_id) from None

    def set_repo_digest(self, name: str, digest: str, image_id: str) -> None:
        self.db.set_tag(f"{name}@{digest}", image_id)

    def layer_in_use(self, layer_id: str) -> bool:
        return bool(self._images_using_layer(layer_id))

    def tag(self, ref_or_id: str, new_ref: str) -> str:
        """``skiff tag``; returns the stored (familiar) form of ``new_ref``."""
        parsed = str(_tag_ref(new_ref))
        with self._lock:
            image_id = self._resolve(ref_or_id)[0]
            self.db.set_tag(parsed, image_id)
        return parsed

    # -- reading ------------------------------------------------------------

    def _config(self, image_id: str) -> dict[str, Any]:
        try:
            data = (self.dir / image_id.removeprefix("sha256:")).read_bytes()
        except FileNotFoundError:
            raise _not_found(image_id) from None
        return json.loads(data)

    def _image(self, image_id: str, tags: list[str] | None = None) -> Image:
        config = self._config(image_id)
        diff_ids = list(config["rootfs"]["diff_ids"])
        refs = self.db.tags_for(image_id) if tags is None else tags
        size = 0
        for lid in diff_ids:
            try:
                size += self.layers.get(lid).size
            except NotFound:
                pass
        return Image(
            id=image_id,
            repo_tags=[r for r in refs if "@" not in r],
            repo_digests=[r for r in refs if "@" in r],
            created=config.get("created", ""),
            size=size,
            layers=diff_ids,
            config=config,
        )

    def _ids(self) -> list[str]:
        return ["sha256:" + p.name for p in self.dir.iterdir() if _HEX.match(p.name) and len(p.name) == 64]

    def _resolve(self, ref: str) -> tuple[str, str | None]:
        """Return (image id, the tag it was found by or None when found by id)."""
        if ref.startswith("sha256:"):
            return self._by_id(ref, ref.removeprefix("sha256:")), None
        try:
            parsed = str(reference.parse(ref))
        except InvalidArgument:
            parsed = None
        if parsed:
            image_id = self.db.get_tag(parsed)
            if image_id and (self.dir / image_id.removeprefix("sha256:")).exists():
                return image_id, parsed
        return self._by_id(ref, ref), None

    def _by_id(self, ref: str, hexpart: str) -> str:
        if not _HEX.match(hexpart) or len(hexpart) < MIN_PREFIX:
            raise _not_found(ref)
        if len(hexpart) == 64:
            if (self.dir / hexpart).exists():
                return "sha256:" + hexpart
            raise _not_found(ref)
        matches = [i for i in self._ids() if i.startswith("sha256:" + hexpart)]
        if len(matches) > 1:
            raise InvalidArgument(f"ambiguous image id prefix {ref!r}: matches {len(matches)} images")
        if not matches:
            raise _not_found(ref)
        return matches[0]

    def config_of(self, ref_or_id: str) -> tuple[str, dict[str, Any]]:
        """(image id, its whole config) by any reference :meth:`get` takes, without the tags and
        sizes a listing needs: what a create reads. The config is read once per image and kept;
        the caller must not modify it."""
        image_id = self._resolve(ref_or_id)[0]
        config = self._configs.get(image_id)
        if config is None:
            config = self._config(image_id)
            if len(self._configs) >= 64:
                self._configs.clear()
            self._configs[image_id] = config
        return image_id, config

    def get(self, ref_or_id: str) -> Image:
        """By ``name[:tag]``, full id, ``sha256:`` id or prefix, or unique hex prefix (>= 4)."""
        return self._image(self._resolve(ref_or_id)[0])

    def list(self) -> list[Image]:
        """All images, newest first."""
        by_image: dict[str, list[str]] = {}
        for ref, image_id in self.db.all_tags().items():
            by_image.setdefault(image_id, []).append(ref)
        images = [self._image(i, sorted(by_image.get(i, []))) for i in self._ids()]
        return sorted(images, key=lambda im: (im.created, im.id), reverse=True)

    def _images_using_layer(self, layer_id: str, exclude: str | None = None) -> builtins.list[str]:
        out: builtins.list[str] = []
        for image_id in self._ids():
            if image_id == exclude:
                continue
            try:
                if layer_id in self._config(image_id)["rootfs"]["diff_ids"]:
                    out.append(image_id)
            except (NotFound, ValueError, KeyError):
                continue
        return out

    # -- removing -----------------------------------------------------------

    def remove(self, ref: str, force: bool = False) -> builtins.list[tuple[str, str]]:
        """``skiff rmi``: returns ``("Untagged", ref)`` and ``("Deleted", id)`` records in order."""
        with self._lock:
            image_id, by_tag = self._resolve(ref)
            refs = self.db.tags_for(image_id)
            tags = [r for r in refs if "@" not in r]
            users = self.db.containers_using_image(image_id)
            records: builtins.list[tuple[str, str]] = []
            meta = {"image_id": image_id}
            if by_tag is not None:
                if users and not force and len(tags) <= 1:
                    raise Conflict(
                        f'conflict: unable to remove repository reference "{ref}" (must force) - container '
                        f"{_short(users[0])} is using its referenced image {_short(image_id)}",
                        reason=IMAGE_IN_USE,
                        metadata={**meta, "container_id": users[0]},
                    )
                self.db.remove_tag(by_tag)
                records.append(("Untagged", by_tag))
                if len(tags) > 1 or (by_tag not in tags and tags):
                    return records
            else:
                if len(tags) > 1 and not force:
                    raise Conflict(
                        f"conflict: unable to delete {_short(image_id)} (must be forced) - "
                        "image is referenced in multiple repositories",
                        metadata=meta,
                    )
                if users and not force:
                    raise Conflict(
                        f"conflict: unable to delete {_short(image_id)} (must be forced) - "
                        f"image is being used by stopped container {_short(users[0])}",
                        reason=IMAGE_IN_USE,
                        metadata={**meta, "container_id": users[0]},
                    )
                for t in tags:
                    self.db.remove_tag(t)
                    records.append(("Untagged", t))
            for d in refs:
                if "@" in d and d != by_tag:
                    self.db.remove_tag(d)
                    records.append(("Untagged", d))
            records.extend(self._delete(image_id))
            return records

    def _delete(self, image_id: str) -> builtins.list[tuple[str, str]]:
        diff_ids = self._config(image_id)["rootfs"]["diff_ids"]
        (self.dir / image_id.removeprefix("sha256:")).unlink()
        records = [("Deleted", image_id)]
        for lid in dict.fromkeys(reversed(diff_ids)):  # top first, each once
            if self._images_using_layer(lid) or not self.layers.exists(lid):
                continue
            try:
                self.layers.remove(lid)
            except FailedPrecondition:
                continue  # a prepared container still runs on it (rmi -f); kept until a later GC
            self.content.unlink_layer(lid)
            records.append(("Deleted", lid))
        return records


def _tag_ref(ref: str) -> reference.Reference:
    parsed = reference.parse(ref)
    if parsed.digest:
        raise InvalidArgument(f"refusing to create a tag with a digest reference: {ref!r}")
    return parsed


class _Tee:
    """Reads through to ``raw`` while writing every byte to a content-store writer."""

    def __init__(self, raw: IO[bytes], writer: Any):
        self._raw = raw
        self._w = writer
        self.gzip = False
        self._first = True

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        if self._first and data:
            self.gzip = data[:2] == b"\x1f\x8b"
            self._first = False
        self._w.write(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass
