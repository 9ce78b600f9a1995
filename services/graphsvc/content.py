"""The content store: blobs (compressed layers as a registry serves them) by sha256.

A blob is written to a temp file while its sha256 and size are computed, then
checked against the expected digest and size, fsynced and renamed into place:
a blob that does not match never lands, and an interrupted write leaves only a
temp file, which the next start removes.

Each layer also records which blob it was unpacked from (``by-diffid``), so a
push sends the registry the very bytes a pull got (and an imported layer the
tarball it came from), never a re-made tar whose DiffID would differ.

On-disk layout::

    <root>/blobs/sha256/<hex>         blob bytes
    <root>/blobs/by-diffid/<hex>      {"digest", "mediaType", "size"} of the layer's blob
    <root>/blobs/tmp/                 staging
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from skiff.common.errors import InvalidArgument, NotFound

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def check_digest(digest: str) -> str:
    """The hex part of a ``sha256:<64 hex>`` digest, or InvalidArgument."""
    if not _DIGEST.match(digest):
        raise InvalidArgument(f"invalid digest {digest!r}")
    return digest.removeprefix("sha256:")


class DigestMismatch(InvalidArgument):
    """The bytes received are not the ones the digest names."""


@dataclass(frozen=True)
class BlobRef:
    digest: str
    media_type: str
    size: int


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Writer:
    """One blob being written; :meth:`commit` verifies and publishes it, :meth:`abort` drops it."""

    def __init__(self, store: ContentStore, expected: str | None, expected_size: int | None):
        self._store = store
        self.expected = expected
        self.expected_size = expected_size
        self.tmp = store.tmp / uuid.uuid4().hex
        self._f: IO[bytes] | None = open(self.tmp, "wb")  # noqa: SIM115 (closed by commit/abort)
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        assert self._f is not None
        self._f.write(data)
        self._hash.update(data)
        self.size += len(data)
        if self.expected_size is not None and self.size > self.expected_size:
            self.abort()
            raise DigestMismatch(f"blob {self.expected}: more than the {self.expected_size} bytes announced")

    def commit(self) -> str:
        """Verify, fsync, rename; returns the digest. Raises DigestMismatch (and drops the file)."""
        assert self._f is not None
        digest = "sha256:" + self._hash.hexdigest()
        try:
            if self.expected is not None and digest != self.expected:
                raise DigestMismatch(f"blob digest mismatch: expected {self.expected}, got {digest}")
            if self.expected_size is not None and self.size != self.expected_size:
                raise DigestMismatch(
                    f"blob {digest}: size mismatch: expected {self.expected_size}, got {self.size}")
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            self._f = None
            os.replace(self.tmp, self._store.path(digest))
            _fsync_dir(self._store.dir)
            return digest
        finally:
            self.abort()

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()  # a no-op after commit


class ContentStore:
    def __init__(self, root: Path | str):
        base = Path(root) / "blobs"
        self.dir = base / "sha256"
        self.links = base / "by-diffid"
        self.tmp = base / "tmp"
        for d in (self.dir, self.links, self.tmp):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        for leftover in self.tmp.iterdir():  # interrupted writes
            leftover.unlink()

    def path(self, digest: str) -> Path:
        return self.dir / check_digest(digest)

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found") from None

    def open(self, digest: str) -> IO[bytes]:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found") from None

    def writer(self, expected: str | None = None, expected_size: int | None = None) -> Writer:
        if expected is not None:
            check_digest(expected)
        return Writer(self, expected, expected_size)

    def write(self, chunks: Iterable[bytes], expected: str | None = None, expected_size: int | None = None) -> str:
        with self.writer(expected, expected_size) as w:
            for chunk in chunks:
                w.write(chunk)
            return w.commit()

    def remove(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    # -- layer <-> blob -------------------------------------------------------

    def link(self, diff_id: str, blob: BlobRef) -> None:
        data = json.dumps({"digest": blob.digest, "mediaType": blob.media_type, "size": blob.size}).encode()
        tmp = self.tmp / uuid.uuid4().hex
        try:
            tmp.write_bytes(data)
            os.replace(tmp, self.links / check_digest(diff_id))
        finally:
            tmp.unlink(missing_ok=True)

    def blob_for(self, diff_id: str) -> BlobRef | None:
        """The blob the layer came from, if it is still stored."""
        try:
            data = json.loads((self.links / check_digest(diff_id)).read_bytes())
        except (FileNotFoundError, ValueError):
            return None
        blob = BlobRef(data["digest"], data["mediaType"], int(data["size"]))
        return blob if self.exists(blob.digest) else None

    def remove_unreferenced(self) -> list[str]:
        """Drop blobs no layer came from: those of a pull, commit or import cut short by a crash
        between the blob landing and its layer being made. Only at start-up, when nothing writes."""
        keep = set()
        for link in self.links.iterdir():
            try:
                keep.add(check_digest(json.loads(link.read_bytes())["digest"]))
            except (ValueError, KeyError, InvalidArgument):
                continue
        dropped = []
        for blob in self.dir.iterdir():
            if blob.name not in keep:
                blob.unlink(missing_ok=True)
                dropped.append("sha256:" + blob.name)
        return dropped

    def unlink_layer(self, diff_id: str) -> None:
        """Forget a removed layer and drop its blob."""
        blob = self.blob_for(diff_id)
        (self.links / check_digest(diff_id)).unlink(missing_ok=True)
        if blob is not None:
            self.remove(blob.digest)
