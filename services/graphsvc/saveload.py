"""``skiff save`` and ``skiff load``: image archives that Docker, skopeo and umoci read.

``save`` writes the layout Docker 25+ writes, an OCI image layout and the
docker-save ``manifest.json`` over the same blobs::

    oci-layout                        {"imageLayoutVersion": "1.0.0"}
    index.json                        one OCI manifest per saved reference (or image)
    manifest.json                     [{"Config", "RepoTags", "Layers"}] (docker-save)
    blobs/sha256/<hex>                configs, OCI manifests, and layers as plain tars

Layers are written uncompressed, so each layer's blob digest is its DiffID; a
layer whose stored blob is gzip is first decompressed into a temporary file
(a tar header needs the size up front). The archive is produced as a stream of
chunks, never held in memory.

``load`` accepts that layout, an older docker-save (``<hex>/layer.tar``,
``<hex>.json``, symlinked duplicate layers) and a bare OCI image layout, plain
or gzip. The archive's order is arbitrary (``manifest.json`` usually comes
last), so regular members are spooled to a private temporary directory under
uuid names first; layers then go through the safe extractor and each must
unpack to the DiffID its config names.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import posixpath
import shutil
import tarfile
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from skiff.common.errors import UNSAFE_ARCHIVE, InvalidArgument, NotFound
from skiff.graphsvc import reference, registry
from skiff.graphsvc.content import BlobRef, check_digest
from skiff.graphsvc.images import _ARCH, Image, ImageStore

CHUNK = 1 << 20
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
#: JSON members (manifest.json, index.json, configs, manifests) are read whole: cap them.
MAX_JSON = 16 << 20
_BLOCK = 512


def _gzip_file(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


# -- save ------------------------------------------------------------------------


def _header(name: str, size: int, mode: int = 0o644, dir_: bool = False) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = 0 if dir_ else size
    info.mode = 0o755 if dir_ else mode
    info.type = tarfile.DIRTYPE if dir_ else tarfile.REGTYPE
    info.mtime = 0
    return info.tobuf(format=tarfile.PAX_FORMAT)


def _pad(size: int) -> bytes:
    return b"\0" * (-size % _BLOCK)


def _member(name: str, data: bytes) -> Iterator[bytes]:
    yield _header(name, len(data))
    yield data + _pad(len(data))


def _file_member(name: str, f: IO[bytes], size: int) -> Iterator[bytes]:
    yield _header(name, size)
    left = size
    while left:
        chunk = f.read(min(CHUNK, left))
        if not chunk:
            raise InvalidArgument(f"{name}: the stored layer is shorter than expected")
        left -= len(chunk)
        yield chunk
    yield _pad(size)


@dataclass
class _Saved:
    image: Image
    config: bytes
    tags: list[str]


class Saver:
    def __init__(self, images: ImageStore, tmp_dir: Path):
        self.images = images
        self.tmp_dir = tmp_dir

    def _resolve(self, refs: list[str]) -> list[_Saved]:
        if not refs:
            raise InvalidArgument("save needs at least one image")
        saved: dict[str, _Saved] = {}
        for ref in refs:
            image = self.images.get(ref)
            entry = saved.setdefault(image.id, _Saved(image, self.images.raw_config(image.id), []))
            try:
                parsed = str(reference.parse(ref))
            except InvalidArgument:
                parsed = ""
            if not ref.startswith("sha256:") and parsed in image.repo_tags and parsed not in entry.tags:
                entry.tags.append(parsed)
        return list(saved.values())

    def _layer(self, diff_id: str) -> Iterator[bytes]:
        """The layer as a plain tar whose digest is its DiffID."""
        name = "blobs/sha256/" + check_digest(diff_id)
        blob = self.images.content.blob_for(diff_id)
        if blob is None:
            raise NotFound(f"layer {diff_id}: its archive is not stored; cannot save it")
        with self.images.content.open(blob.digest) as f:
            if f.read(2) != b"\x1f\x8b":
                f.seek(0)
                self._sizes[check_digest(diff_id)] = blob.size
                yield from _file_member(name, f, blob.size)
                return
            f.seek(0)
            with tempfile.TemporaryFile(dir=self.tmp_dir) as plain:
                with gzip.GzipFile(fileobj=f) as gz:
                    shutil.copyfileobj(gz, plain, CHUNK)
                size = plain.tell()
                self._sizes[check_digest(diff_id)] = size
                plain.seek(0)
                yield from _file_member(name, plain, size)

    def save(self, refs: list[str]) -> Iterator[bytes]:
        """The archive, chunk by chunk. Every image is resolved before the first byte."""
        saved = self._resolve(refs)
        self._sizes: dict[str, int] = {}
        written: set[str] = set()
        manifest_json: list[dict[str, Any]] = []
        index: list[dict[str, Any]] = []
        yield _header("blobs", 0, dir_=True)
        yield _header("blobs/sha256", 0, dir_=True)
        for s in saved:
            config_hex = hashlib.sha256(s.config).hexdigest()
            if config_hex not in written:
                written.add(config_hex)
                yield from _member("blobs/sha256/" + config_hex, s.config)
            layers = []
            for diff_id in s.image.layers:
                hexd = check_digest(diff_id)
                if hexd not in written:
                    written.add(hexd)
                    yield from self._layer(diff_id)
                layers.append({"mediaType": OCI_LAYER, "digest": diff_id, "size": self._sizes[hexd]})
            manifest = json.dumps({
                "schemaVersion": 2, "mediaType": registry.OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": "sha256:" + config_hex, "size": len(s.config)},
                "layers": layers,
            }, separators=(",", ":")).encode()
            manifest_hex = hashlib.sha256(manifest).hexdigest()
            if manifest_hex not in written:
                written.add(manifest_hex)
                yield from _member("blobs/sha256/" + manifest_hex, manifest)
            desc = {"mediaType": registry.OCI_MANIFEST, "digest": "sha256:" + manifest_hex, "size": len(manifest)}
            for tag in s.tags or [""]:
                entry = dict(desc)
                if tag:
                    full = reference.parse(tag)
                    entry["annotations"] = {
                        "io.containerd.image.name": _full_name(full),
                        "org.opencontainers.image.ref.name": full.tag or "latest",
                    }
                index.append(entry)
            manifest_json.append({
                "Config": "blobs/sha256/" + config_hex,
                "RepoTags": s.tags,
                "Layers": ["blobs/sha256/" + check_digest(d) for d in s.image.layers],
            })
        yield from _member("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        yield from _member("index.json", json.dumps({
            "schemaVersion": 2, "mediaType": registry.OCI_INDEX, "manifests": index}).encode())
        yield from _member("manifest.json", json.dumps(manifest_json).encode())
        yield b"\0" * (_BLOCK * 2)


def _full_name(ref: reference.Reference) -> str:
    remote = reference.remote(ref)
    host = "docker.io" if remote.registry == "registry-1.docker.io" else remote.registry
    return f"{host}/{remote.repository}:{ref.tag or 'latest'}"


# -- load ------------------------------------------------------------------------


class _Spool:
    """The archive's members on disk, by normalised name (symlinks resolved lexically)."""

    def __init__(self, root: Path):
        self.root = root
        self.files: dict[str, Path] = {}
        self.links: dict[str, str] = {}

    @staticmethod
    def norm(name: str) -> str:
        n = posixpath.normpath("/" + name).lstrip("/")
        return n

    def resolve(self, name: str) -> Path:
        n = self.norm(name)
        for _ in range(16):
            if n in self.files:
                return self.files[n]
            if n not in self.links:
                break
            n = self.links[n]
        raise InvalidArgument(f"the archive has no file {name!r}", reason=UNSAFE_ARCHIVE)

    def has(self, name: str) -> bool:
        try:
            self.resolve(name)
            return True
        except InvalidArgument:
            return False

    def json(self, name: str) -> Any:
        path = self.resolve(name)
        if path.stat().st_size > MAX_JSON:
            raise InvalidArgument(f"{name}: too large for a JSON document", reason=UNSAFE_ARCHIVE)
        try:
            return json.loads(path.read_bytes())
        except ValueError as err:
            raise InvalidArgument(f"{name}: invalid JSON: {err}", reason=UNSAFE_ARCHIVE) from None


def _spool(stream: IO[bytes], root: Path, max_entries: int = 100_000) -> _Spool:
    spool = _Spool(root)
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tf:
            for i, m in enumerate(tf):
                if i >= max_entries:
                    raise InvalidArgument("the archive has too many entries", reason=UNSAFE_ARCHIVE)
                name = spool.norm(m.name)
                if m.isreg():
                    dest = root / uuid.uuid4().hex
                    src = tf.extractfile(m)
                    assert src is not None
                    with open(dest, "wb") as out:
                        shutil.copyfileobj(src, out, CHUNK)
                    spool.files[name] = dest
                elif m.issym():
                    spool.links[name] = spool.norm(posixpath.join(posixpath.dirname(name), m.linkname))
                elif m.islnk():
                    spool.links[name] = spool.norm(m.linkname)
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as err:
        if isinstance(err, OSError) and err.errno is not None:
            raise
        raise InvalidArgument(f"invalid image archive: {err}", reason=UNSAFE_ARCHIVE) from None
    return spool


@dataclass
class _ToLoad:
    config: str  # member name
    layers: list[str]  # member names, base first
    tags: list[str]


def _from_docker(spool: _Spool) -> list[_ToLoad]:
    doc = spool.json("manifest.json")
    if not isinstance(doc, list):
        raise InvalidArgument("manifest.json: expected a list", reason=UNSAFE_ARCHIVE)
    return [_ToLoad(str(e["Config"]), [str(x) for x in e.get("Layers") or []], list(e.get("RepoTags") or []))
            for e in doc]


def _blob_name(desc: dict[str, Any]) -> str:
    return "blobs/sha256/" + check_digest(str(desc.get("digest", "")))


def _from_oci(spool: _Spool, os_: str, arch: str) -> list[_ToLoad]:
    index = spool.json("index.json")
    out: list[_ToLoad] = []

    def visit(desc: dict[str, Any], names: list[str], depth: int = 0) -> None:
        media = desc.get("mediaType", "")
        doc = spool.json(_blob_name(desc))
        if media in registry.INDEXES or "manifests" in doc:
            if depth > 4:
                raise InvalidArgument("index.json: nested too deeply", reason=UNSAFE_ARCHIVE)
            visit(registry.choose_manifest(doc, os_, arch), names, depth + 1)
            return
        out.append(_ToLoad(_blob_name(doc["config"]), [_blob_name(x) for x in doc.get("layers") or []], names))

    for desc in index.get("manifests") or []:
        ann = desc.get("annotations") or {}
        name = ann.get("io.containerd.image.name") or ""
        ref_name = ann.get("org.opencontainers.image.ref.name") or ""
        if not name and (":" in ref_name or "/" in ref_name):
            name = ref_name
        visit(desc, [name] if name else [])
    return out


class Loader:
    def __init__(self, images: ImageStore, tmp_dir: Path):
        self.images = images
        self.tmp_dir = tmp_dir

    def load(self, stream: IO[bytes]) -> tuple[list[str], list[Image]]:
        """Returns Docker's output lines and the images loaded."""
        tmp = Path(tempfile.mkdtemp(prefix="load-", dir=self.tmp_dir))
        try:
            spool = _spool(stream, tmp)
            if spool.has("manifest.json"):
                todo = _from_docker(spool)
            elif spool.has("index.json"):
                arch = os.uname().machine
                todo = _from_oci(spool, "linux", _ARCH.get(arch, arch))
            else:
                raise InvalidArgument("the archive has neither manifest.json nor index.json "
                                      "(not a docker-save or OCI image archive)", reason=UNSAFE_ARCHIVE)
            messages: list[str] = []
            loaded: list[Image] = []
            for item in todo:
                image = self._load_one(spool, item)
                loaded.append(image)
                tags = [str(_tag(t)) for t in item.tags]
                for t in tags:
                    self.images.db.set_tag(t, image.id)
                    messages.append(f"Loaded image: {t}")
                if not tags:
                    messages.append(f"Loaded image ID: {image.id}")
            return messages, [self.images.get(i.id) for i in loaded]
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _load_one(self, spool: _Spool, item: _ToLoad) -> Image:
        config_bytes = spool.resolve(item.config).read_bytes()
        try:
            config = json.loads(config_bytes)
            diff_ids = list(config["rootfs"]["diff_ids"])
        except (ValueError, KeyError, TypeError):
            raise InvalidArgument(f"{item.config}: not an image config", reason=UNSAFE_ARCHIVE) from None
        if len(diff_ids) != len(item.layers):
            raise InvalidArgument(f"{item.config}: {len(diff_ids)} diff_ids for {len(item.layers)} layers",
                                  reason=UNSAFE_ARCHIVE)
        with self.images.lock:
            for diff_id, member in zip(diff_ids, item.layers, strict=True):
                check_digest(diff_id)
                if self.images.layers.exists(diff_id) and self.images.content.blob_for(diff_id):
                    continue
                self._load_layer(spool.resolve(member), diff_id)
            image_id = self.images.add_config(config_bytes)
        return self.images.get(image_id)

    def _load_layer(self, path: Path, diff_id: str) -> None:
        gz = _gzip_file(path)
        with open(path, "rb") as f:
            layer = self.images.layers.create_layer_from_archive(f)
        if layer.id != diff_id:
            if not self.images.layer_in_use(layer.id):
                self.images.layers.remove(layer.id)
            raise InvalidArgument(f"layer unpacked to {layer.id}, the config says {diff_id}", reason=UNSAFE_ARCHIVE)
        if self.images.content.blob_for(diff_id) is None:
            with open(path, "rb") as f, self.images.content.writer() as w:
                while chunk := f.read(CHUNK):
                    w.write(chunk)
                size = w.size
                digest = w.commit()
            self.images.content.link(diff_id, BlobRef(digest, OCI_LAYER_GZIP if gz else OCI_LAYER, size))


def _tag(ref: str) -> reference.Reference:
    parsed = reference.parse(ref)
    if parsed.digest:
        raise InvalidArgument(f"cannot tag a loaded image with a digest reference: {ref!r}")
    return parsed
