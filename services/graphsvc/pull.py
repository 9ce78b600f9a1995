"""``skiff pull``: manifest, config, layers from a registry into the content and layer stores.

The order is Docker's: resolve the manifest (choosing the platform from a
manifest list), fetch the config, then download the missing layers three at a
time; each is unpacked through the LayerStore while it downloads, by the same
worker (layers are independent directories, so they unpack side by side), and
published only once the blob matched its digest and what was unpacked has the
DiffID the config names; last, store the config bytes
unchanged (so the image id is the one Docker computes) and tag.

Layers are independent directories stacked by the driver (overlay lowerdirs,
or vfs copies at prepare), so each is unpacked on its own, once, by DiffID;
one that is already present is not downloaded at all ("Already exists").
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import platform
import queue
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any, TypeVar

from skiff.common.errors import InvalidArgument, SkiffError, Unavailable
from skiff.graphsvc import reference, registry
from skiff.graphsvc.content import BlobRef, DigestMismatch
from skiff.graphsvc.images import _ARCH, Image, ImageStore
from skiff.graphsvc.layers import Layer

CONCURRENT_DOWNLOADS = 3
MAX_CONFIG = 4 << 20
_PROGRESS_EVERY = 0.1  # seconds between "Downloading" updates of one layer


@dataclass(frozen=True)
class Progress:
    id: str
    status: str
    current: int = 0
    total: int = 0


Report = Callable[[Progress], None]
ClientFactory = Callable[[str, str, registry.Credentials, tuple[str, ...]], registry.Client]


log = logging.getLogger(__name__)


def default_client(reg: str, repo: str, creds: registry.Credentials, actions: tuple[str, ...]) -> registry.Client:
    return registry.Client(reg, repo, creds, actions)


class RegistryClients:
    """Clients as the daemon's registry options say: insecure registries, mirrors, the hub's address.

    ``hub`` is where Docker Hub names go (``registry-1.docker.io``; the tests point it at a
    local registry so that nothing ever reaches the real hub).
    """

    def __init__(self, options: registry.Options | None = None, hub: str = reference.DOCKER_HUB_REGISTRY):
        self.options = options or registry.Options()
        self.hub = hub

    def __call__(self, reg: str, repo: str, creds: registry.Credentials,
                 actions: tuple[str, ...]) -> registry.Client:
        if reg == reference.DOCKER_HUB_REGISTRY:
            reg = self.hub
        return registry.Client(reg, repo, creds, actions, insecure=self.options.is_insecure(reg))

    def mirrors(self, reg: str, repo: str,
                creds: Mapping[str, registry.Credentials] | None = None) -> list[registry.Client]:
        """Docker Hub's mirrors, to try before the hub (pull only). Each gets the credentials of
        its own ``host[:port]`` from ``creds`` (the user logged in to it), else none: the hub's
        credentials stay with the hub."""
        if reg != reference.DOCKER_HUB_REGISTRY:
            return []
        creds = creds or {}
        return [registry.Client(host, repo, creds.get(host) or registry.Credentials(), ("pull",), scheme=scheme,
                                insecure=self.options.is_insecure(host))
                for scheme, host in self.options.mirror_hosts()]


def auth_host(server_address: str) -> str:
    """``host[:port]`` of a login's key (``127.0.0.1:5000``, ``https://mirror.example/v2/``)."""
    if "://" in server_address:
        return urllib.parse.urlsplit(server_address).netloc
    return server_address.split("/", 1)[0]


def short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


class _Counting:
    """A read-only stream that reports how much has been read (for "Extracting")."""

    def __init__(self, raw: IO[bytes], report: Callable[[int], None]):
        self._raw = raw
        self._report = report
        self.count = 0
        self._last = 0.0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self.count += len(data)
        now = time.monotonic()
        if now - self._last >= _PROGRESS_EVERY or not data:
            self._last = now
            self._report(self.count)
        return data


class _BlobTee:
    """A registry blob response read as a file, each byte also written (and hashed) to the
    content-store writer. Network errors become UNAVAILABLE (not a bad archive)."""

    def __init__(self, resp: registry.Response, writer: Any, report: Callable[[int], None]):
        self._resp = resp
        self._w = writer
        self._report = report
        self._last = 0.0
        self.failed = False

    def read(self, n: int = -1) -> bytes:
        try:
            data = self._resp.read(n if n is not None and n >= 0 else registry.CHUNK)
        except (OSError, http.client.HTTPException) as err:
            self.failed = True
            raise Unavailable(f"downloading the layer: {err or type(err).__name__}") from None
        if data:
            self._w.write(data)
            now = time.monotonic()
            if now - self._last >= _PROGRESS_EVERY:
                self._last = now
                self._report(self._w.size)
        return data

    def drain(self) -> None:
        while self.read(registry.CHUNK):
            pass


class Puller:
    def __init__(self, images: ImageStore, client_factory: ClientFactory = default_client):
        self.images = images
        self.content = images.content
        self.client_factory = client_factory

    def pull(self, ref_s: str, platform_s: str, creds: registry.Credentials, report: Report,
             mirror_creds: Mapping[str, registry.Credentials] | None = None) -> Image:
        """``mirror_creds``: credentials by ``host[:port]``, for Docker Hub's mirrors (each its own)."""
        ref = reference.parse(ref_s)
        remote = reference.remote(ref)
        client = self.client_factory(remote.registry, remote.repository, creds, ("pull",))
        mirrors = getattr(self.client_factory, "mirrors", None)
        candidates = [*(mirrors(remote.registry, remote.repository, mirror_creds) if mirrors else []), client]
        os_, arch, variant = registry.parse_platform(platform_s, _ARCH.get(platform.machine(), platform.machine()))
        report(Progress(ref.tag if not ref.digest else ref.digest,
                        f"Pulling from {remote.repository.removeprefix('library/')}"))

        for candidate in candidates:
            try:
                manifest_digest, manifest = self._manifest(candidate, ref, os_, arch, variant)
            except SkiffError as err:
                if candidate is client:
                    raise
                # As Docker: a mirror that fails or lacks the image is skipped, the hub is next.
                log.info("mirror %s: %s; trying the next endpoint", candidate.registry, err)
                continue
            client = candidate
            break
        config_desc = manifest.get("config") or {}
        config_bytes = self._config(client, config_desc)
        config = json.loads(config_bytes)
        diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
        layers = list(manifest.get("layers") or [])
        if len(diff_ids) != len(layers):
            raise InvalidArgument(f"manifest has {len(layers)} layers but the config {len(diff_ids)} diff_ids")
        for desc in layers:
            if desc.get("mediaType") not in registry.LAYER_TYPES:
                raise InvalidArgument(f"layer {desc.get('digest')}: unsupported media type {desc.get('mediaType')!r}")

        image_id = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        existed = self.images.has_image(image_id)
        fresh = [desc["digest"] for desc in layers if not self.content.exists(desc["digest"])]
        new_layers = [d for d in diff_ids if not self.images.layers.exists(d)]
        try:
            return self._layers(ref, client, manifest_digest, config_bytes, layers, diff_ids, existed, report)
        except BaseException:
            # What this pull brought in and no image uses goes again: the blobs, and the layers
            # already unpacked. Nothing is left half done, and the next pull starts clean.
            with self.images.lock:
                for diff_id in new_layers:
                    if self.images.layers.exists(diff_id) and not self.images.layer_in_use(diff_id):
                        try:
                            self.images.layers.remove(diff_id)
                            self.content.unlink_layer(diff_id)
                        except SkiffError:  # a container uses it meanwhile: it stays
                            pass
                for desc, diff_id in zip(layers, diff_ids, strict=True):
                    if desc["digest"] in fresh and not self.images.layers.exists(diff_id):
                        self.content.remove(desc["digest"])
            raise

    def _layers(self, ref: reference.Reference, client: registry.Client, manifest_digest: str,
                config_bytes: bytes, layers: list[dict[str, Any]], diff_ids: list[str], existed: bool,
                report: Report) -> Image:
        with ThreadPoolExecutor(CONCURRENT_DOWNLOADS, thread_name_prefix="pull") as pool:
            futures: list[Future[BlobRef] | None] = []
            for desc, diff_id in zip(layers, diff_ids, strict=True):
                if self.images.layers.exists(diff_id):
                    report(Progress(short(desc["digest"]), "Already exists"))
                    futures.append(None)
                    continue
                report(Progress(short(desc["digest"]), "Pulling fs layer"))
                futures.append(pool.submit(self._fetch, client, desc, diff_id, report))
            try:
                for fut in futures:
                    if fut is not None:
                        fut.result()
            except BaseException:
                for f in futures:
                    if f is not None:
                        f.cancel()
                raise
        with self.images.lock:
            missing = [d for d in diff_ids if not self.images.layers.exists(d)]
            if missing:  # removed by a concurrent rmi between its unpacking and now
                raise Unavailable(f"layer {missing[0]} was removed during the pull; pull again")
            image_id = self.images.add_config(config_bytes)
            old = self.images.db.get_tag(f"{ref.name}:{ref.tag}") if ref.tag else None
            if ref.tag:
                self.images.db.set_tag(f"{ref.name}:{ref.tag}", image_id)
            self.images.set_repo_digest(ref.name, manifest_digest, image_id)
        report(Progress("", f"Digest: {manifest_digest}"))
        up_to_date = existed and (not ref.tag or old == image_id)
        status = "Image is up to date for" if up_to_date else "Downloaded newer image for"
        report(Progress("", f"Status: {status} {ref}"))
        return self.images.get(image_id)

    def _manifest(self, client: registry.Client, ref: reference.Reference, os_: str, arch: str,
                  variant: str) -> tuple[str, dict[str, Any]]:
        data, media = client.get_manifest(ref.digest or ref.tag)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if ref.digest and digest != ref.digest:
            raise DigestMismatch(f"manifest digest mismatch: expected {ref.digest}, got {digest}")
        if media in registry.INDEXES:
            desc = registry.choose_manifest(json.loads(data), os_, arch, variant)
            data, media = client.get_manifest(desc["digest"], registry.MANIFESTS)
            got = "sha256:" + hashlib.sha256(data).hexdigest()
            if got != desc["digest"]:
                raise DigestMismatch(f"manifest digest mismatch: expected {desc['digest']}, got {got}")
            if media not in registry.MANIFESTS:
                raise InvalidArgument(f"manifest list entry {desc['digest']} is not an image manifest")
        # Docker records the digest the user pulled (the list's, when a list was pulled).
        return digest, json.loads(data)

    def _config(self, client: registry.Client, desc: dict[str, Any]) -> bytes:
        digest, size = desc.get("digest", ""), int(desc.get("size") or 0)
        if size > MAX_CONFIG:
            raise InvalidArgument(f"image config {digest}: {size} bytes is over the {MAX_CONFIG} byte limit")
        with client.get_blob(digest) as resp:
            data = resp.read(MAX_CONFIG + 1)
        got = "sha256:" + hashlib.sha256(data).hexdigest()
        if got != digest:
            raise DigestMismatch(f"image config digest mismatch: expected {digest}, got {got}")
        return data

    def _download(self, client: registry.Client, desc: dict[str, Any], report: Report) -> BlobRef:
        digest, size, media = desc["digest"], int(desc.get("size") or 0), desc["mediaType"]
        sid = short(digest)
        blob = BlobRef(digest, media, size)
        if self.content.exists(digest):
            report(Progress(sid, "Download complete"))
            return blob
        last = 0.0
        with client.get_blob(digest) as resp, self.content.writer(digest, size or None) as w:
            for chunk in resp.iter():
                w.write(chunk)
                now = time.monotonic()
                if now - last >= _PROGRESS_EVERY:
                    last = now
                    report(Progress(sid, "Downloading", w.size, size))
            report(Progress(sid, "Downloading", w.size, size))
            report(Progress(sid, "Verifying Checksum"))
            w.commit()
        report(Progress(sid, "Download complete"))
        return blob

    def _fetch(self, client: registry.Client, desc: dict[str, Any], diff_id: str, report: Report) -> BlobRef:
        """Download and unpack: each layer is its own directory, so layers unpack side by side
        (zlib, zstd, sha256 and the writes release the GIL) while others download. A blob not yet
        stored is unpacked while it downloads (one pass over the bytes); a blob already stored
        (an earlier pull cut short after its download) is unpacked from the store."""
        if not self.content.exists(desc["digest"]) and not self.images.layers.exists(diff_id):
            return self._stream(client, desc, diff_id, report)
        blob = self._download(client, desc, report)
        if self.images.layers.exists(diff_id):
            report(Progress(short(blob.digest), "Pull complete"))
        else:
            self._extract(blob, diff_id, report)
        return blob

    def _stream(self, client: registry.Client, desc: dict[str, Any], diff_id: str, report: Report) -> BlobRef:
        """The blob goes to the content store (hashed) and to the extractor at once. The layer is
        published only after the whole blob matched its digest and the tar its DiffID: the check
        runs between the unpacking (into a staging directory) and the layer's rename."""
        digest, size, media = desc["digest"], int(desc.get("size") or 0), desc["mediaType"]
        sid = short(digest)
        blob = BlobRef(digest, media, size)
        with client.get_blob(digest) as resp, self.content.writer(digest, size or None) as w:
            tee = _BlobTee(resp, w, lambda n: report(Progress(sid, "Downloading", n, size)))

            def verify(layer: Layer) -> None:
                tee.drain()  # bytes after the tar's end (padding) are part of the blob too
                report(Progress(sid, "Downloading", w.size, size))
                report(Progress(sid, "Verifying Checksum"))
                w.commit()
                report(Progress(sid, "Download complete"))
                if layer.id != diff_id:
                    raise DigestMismatch(f"layer {digest}: unpacked to {layer.id}, the config says {diff_id}")

            try:
                self.images.layers.create_layer_from_archive(tee, before_commit=verify)  # type: ignore[arg-type]
            except InvalidArgument as err:
                if isinstance(err, DigestMismatch) or tee.failed:
                    raise
                # The tar is bad: if the bytes are not the blob's, that is the error to report
                # (a corrupted download), not the tar's.
                try:
                    tee.drain()
                    w.commit()
                except DigestMismatch:
                    raise
                except (SkiffError, OSError):
                    pass
                raise err from None  # the blob, committed to check it, goes with the pull's clean-up
        report(Progress(sid, "Extracting", size, size))
        self.content.link(diff_id, blob)
        report(Progress(sid, "Pull complete"))
        return blob

    def _extract(self, blob: BlobRef, diff_id: str, report: Report) -> None:
        sid = short(blob.digest)
        with self.content.open(blob.digest) as f:
            stream = _Counting(f, lambda n: report(Progress(sid, "Extracting", n, blob.size)))
            layer = self.images.layers.create_layer_from_archive(stream)  # type: ignore[arg-type]
        if layer.id != diff_id:
            with self.images.lock:
                if not self.images.layer_in_use(layer.id) and not self.images.layers.users(layer.id):
                    self.images.layers.remove(layer.id)
            raise DigestMismatch(f"layer {blob.digest}: unpacked to {layer.id}, the config says {diff_id}")
        self.content.link(diff_id, blob)
        report(Progress(sid, "Pull complete"))


T = TypeVar("T")


def with_progress(run: Callable[[Report], T]) -> Iterator[Progress | T]:
    """Run ``run(report)`` in a thread; yield each Progress as reported, then the result.

    An error in ``run`` is raised here, in the caller's thread, after the
    progress reported before it.
    """
    q: queue.Queue[tuple[str, Any]] = queue.Queue()

    def target() -> None:
        try:
            q.put(("done", run(lambda p: q.put(("progress", p)))))
        except BaseException as err:  # re-raised in the caller's thread
            q.put(("error", err))

    threading.Thread(target=target, name="progress", daemon=True).start()
    while True:
        kind, value = q.get()
        if kind == "progress":
            yield value
        elif kind == "error":
            raise value
        else:
            yield value
            return
