"""``skiff push``: the missing blobs, then a Docker v2 schema 2 manifest.

Each layer is pushed as the blob it was pulled as (zstd layers too, under an OCI
manifest, the only kind that can name them); an imported layer kept as a
plain tar is gzipped once (deterministically, ``mtime=0``) and the gzip blob
replaces it in the content store. Blobs the registry already has (``HEAD``) are
not sent; the others go up three at a time as monolithic uploads (``POST`` for
a session, ``PUT ?digest=``). The config goes up as its stored bytes, so the
image keeps its id.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from concurrent.futures import ThreadPoolExecutor

from skiff.common.errors import FailedPrecondition, InvalidArgument
from skiff.graphsvc import reference, registry
from skiff.graphsvc.content import BlobRef
from skiff.graphsvc.images import ImageStore
from skiff.graphsvc.pull import CONCURRENT_DOWNLOADS, ClientFactory, Progress, Report, default_client, short

_GZIP_TYPES = (registry.DOCKER_LAYER_GZIP, "application/vnd.oci.image.layer.v1.tar+gzip")
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
_OCI_GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
_ZSTD_LAYER = "application/vnd.oci.image.layer.v1.tar+zstd"
_ZSTD_TYPES = ("application/vnd.oci.image.layer.v1.tar+zstd",
               "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd")


class Pusher:
    def __init__(self, images: ImageStore, client_factory: ClientFactory = default_client):
        self.images = images
        self.content = images.content
        self.client_factory = client_factory

    def _gzip_blob(self, diff_id: str, blob: BlobRef) -> BlobRef:
        with self.content.open(blob.digest) as src, self.content.writer() as w:
            class _Sink:
                def write(self, data: bytes) -> int:
                    w.write(data)
                    return len(data)

                def flush(self) -> None:
                    pass

            with gzip.GzipFile(fileobj=_Sink(), mode="wb", mtime=0, compresslevel=6) as gz:  # type: ignore[arg-type]
                while chunk := src.read(1 << 20):
                    gz.write(chunk)
            size = w.size
            digest = w.commit()
        gz_blob = BlobRef(digest, registry.DOCKER_LAYER_GZIP, size)
        self.content.link(diff_id, gz_blob)
        self.content.remove(blob.digest)
        return gz_blob

    def _layer_blob(self, diff_id: str) -> BlobRef:
        blob = self.content.blob_for(diff_id)
        if blob is None:
            raise FailedPrecondition(f"layer {diff_id}: its compressed blob is not stored; cannot push it")
        if blob.media_type not in (*_GZIP_TYPES, *_ZSTD_TYPES):
            with self.images.lock:
                blob = self.content.blob_for(diff_id) or blob
                if blob.media_type not in (*_GZIP_TYPES, *_ZSTD_TYPES):
                    blob = self._gzip_blob(diff_id, blob)
        return blob

    def push(self, ref_s: str, creds: registry.Credentials, report: Report) -> str:
        ref = reference.parse(ref_s)
        if ref.digest:
            raise InvalidArgument(f"cannot push a digest reference: {ref_s!r}")
        image = self.images.get(str(ref))
        config_bytes = self.images.raw_config(image.id)
        remote = reference.remote(ref)
        client = self.client_factory(remote.registry, remote.repository, creds, ("pull", "push"))
        report(Progress("", f"The push refers to repository [{ref.name}]"))
        blobs = []
        for diff_id in reversed(image.layers):  # Docker lists the top layer first
            blob = self._layer_blob(diff_id)
            report(Progress(short(blob.digest), "Preparing"))
            blobs.append(blob)

        def send(blob: BlobRef) -> None:
            sid = short(blob.digest)
            if client.has_blob(blob.digest):
                report(Progress(sid, "Layer already exists"))
                return
            report(Progress(sid, "Pushing", 0, blob.size))
            with self.content.open(blob.digest) as f:
                client.upload_blob(blob.digest, f, blob.size)
            report(Progress(sid, "Pushing", blob.size, blob.size))
            report(Progress(sid, "Pushed"))

        client.has_blob(blobs[0].digest if blobs else image.id)  # authenticate once, before streaming bodies
        with ThreadPoolExecutor(CONCURRENT_DOWNLOADS, thread_name_prefix="push") as pool:
            for fut in [pool.submit(send, b) for b in blobs]:
                fut.result()
        config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        if not client.has_blob(config_digest):
            client.upload_blob(config_digest, config_bytes, len(config_bytes))
        # zstd layers are pushed as they were pulled, which only an OCI manifest can describe.
        oci = any(b.media_type in _ZSTD_TYPES for b in blobs)
        media_type = registry.OCI_MANIFEST if oci else registry.DOCKER_MANIFEST
        manifest = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": OCI_CONFIG if oci else registry.DOCKER_CONFIG, "size": len(config_bytes),
                       "digest": config_digest},
            "layers": [{"mediaType": _ZSTD_LAYER if b.media_type in _ZSTD_TYPES else
                        (_OCI_GZIP_LAYER if oci else registry.DOCKER_LAYER_GZIP), "size": b.size, "digest": b.digest}
                       for b in reversed(blobs)],
        }
        data = json.dumps(manifest, indent=3).encode()
        client.put_manifest(ref.tag, data, media_type)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.images.set_repo_digest(ref.name, digest, image.id)
        report(Progress("", f"{ref.tag}: digest: {digest} size: {len(data)}"))
        return digest
