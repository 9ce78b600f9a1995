"""Image references: ``[domain[:port]/]path[:tag]``, a subset of Docker's grammar.

References are stored in their *familiar* form (``busybox:latest``):
``docker.io/library/busybox`` and ``docker.io/busybox`` normalise to it, so
the same image is never tagged twice under two spellings. A digest reference
(``name@sha256:<64 hex>``) names a manifest in a registry; locally it is a
*repo digest* recorded at pull or push time.

:func:`remote` gives the registry and repository a reference lives in, with
Docker Hub's conventions: ``busybox`` is ``registry-1.docker.io/library/busybox``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from skiff.common.errors import InvalidArgument

DEFAULT_TAG = "latest"
_DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")

_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_DOMAIN = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?$"
)
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_MAX_NAME = 255
DOCKER_HUB_REGISTRY = "registry-1.docker.io"


@dataclass(frozen=True)
class Reference:
    """A parsed ``name:tag`` or ``name@digest``; ``name`` is familiar (no ``docker.io/library/``).

    With a digest, ``tag`` is kept only when the user wrote one (``name:tag@digest``),
    and the digest wins, as in Docker.
    """

    name: str
    tag: str
    digest: str = ""

    def __str__(self) -> str:
        return f"{self.name}@{self.digest}" if self.digest else f"{self.name}:{self.tag}"


@dataclass(frozen=True)
class Remote:
    """Where a reference lives: ``registry`` is ``host[:port]``, ``repository`` the path there."""

    registry: str
    repository: str


def remote(ref: Reference) -> Remote:
    first, sep, rest = ref.name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return Remote(first, rest)
    return Remote(DOCKER_HUB_REGISTRY, ref.name if "/" in ref.name else f"library/{ref.name}")


def _invalid(ref: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"invalid reference format: {why}: {ref!r}")


def parse(ref: str) -> Reference:
    """Parse ``name[:tag]`` (default tag ``latest``) or raise InvalidArgument saying what is wrong."""
    if not ref:
        raise _invalid(ref, "empty reference")
    digest = ""
    if "@" in ref:
        ref_no_digest, _, digest = ref.partition("@")
        if not _DIGEST.match(digest):
            raise _invalid(ref, f"invalid digest {digest!r} (want sha256: and 64 hex digits)")
        parsed = parse(ref_no_digest)
        explicit_tag = ref_no_digest.rfind(":") > ref_no_digest.rfind("/")
        return Reference(parsed.name, parsed.tag if explicit_tag else "", digest)
    name, tag = ref, DEFAULT_TAG
    colon = ref.rfind(":")
    if colon > ref.rfind("/"):
        name, tag = ref[:colon], ref[colon + 1 :]
        if not _TAG.match(tag):
            raise _invalid(ref, f"invalid tag {tag!r}")
    parts = name.split("/")
    domain = ""
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        domain, parts = parts[0], parts[1:]
        if not _DOMAIN.match(domain):
            raise _invalid(ref, f"invalid registry domain {domain!r}")
    for comp in parts:
        if not _COMPONENT.match(comp):
            if comp.lower() != comp and _COMPONENT.match(comp.lower()):
                raise _invalid(ref, "repository name must be lowercase")
            raise _invalid(ref, f"invalid repository name component {comp!r}")
    path = "/".join(parts)
    if domain in _DOCKER_HUB:
        domain = ""
        if path.startswith("library/") and path.count("/") == 1:
            path = path[len("library/") :]
    full = f"{domain}/{path}" if domain else path
    if len(full) > _MAX_NAME:
        raise _invalid(ref, f"repository name longer than {_MAX_NAME} characters")
    return Reference(full, tag)
