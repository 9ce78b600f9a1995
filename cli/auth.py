"""Registry credentials as ``skiff login`` stores them: a Docker-style ``config.json``.

``~/.skiff/config.json`` (mode 0600) holds ``{"auths": {"<registry>": {"auth": base64(user:pass)}}}``;
Docker Hub is keyed ``https://index.docker.io/v1/`` as in Docker's file.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from skiff.types.v1 import types_pb2

HUB_KEY = "https://index.docker.io/v1/"


def config_path() -> Path:
    return Path(os.environ.get("SKIFF_CONFIG", Path.home() / ".skiff")) / "config.json"


def registry_of(name: str) -> str:
    """The registry a reference lives in, as config.json keys it."""
    first, sep, _ = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return HUB_KEY if first in ("docker.io", "index.docker.io", "registry-1.docker.io") else first
    return HUB_KEY


def load() -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(config_path().read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data


def save(config: dict[str, Any]) -> None:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f, indent="\t")
    os.replace(tmp, path)


def store(registry: str, username: str, password: str) -> None:
    config = load()
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    config.setdefault("auths", {})[registry] = {"auth": token}
    save(config)


def erase(registry: str) -> bool:
    config = load()
    found = config.get("auths", {}).pop(registry, None) is not None
    if found:
        save(config)
    return found


def lookup(registry: str) -> tuple[str, str] | None:
    entry = (load().get("auths") or {}).get(registry)
    if not entry or not entry.get("auth"):
        return None
    user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
    return user, password


def for_mirrors(name: str) -> list[types_pb2.RegistryAuth]:
    """For a Docker Hub reference: the stored credentials of the other registries, for the
    engine's hub mirrors (it sends each mirror only its own host's); none for other references."""
    from skiff.types.v1 import types_pb2

    if registry_of(name) != HUB_KEY:
        return []
    out = []
    for key, entry in sorted((load().get("auths") or {}).items()):
        if key == HUB_KEY or not isinstance(entry, dict) or not entry.get("auth"):
            continue
        user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        out.append(types_pb2.RegistryAuth(username=user, password=password, server_address=key))
    return out


def for_reference(name: str) -> types_pb2.RegistryAuth:
    from skiff.types.v1 import types_pb2

    registry = registry_of(name)
    found = lookup(registry)
    if found is None:
        return types_pb2.RegistryAuth()
    return types_pb2.RegistryAuth(username=found[0], password=found[1], server_address=registry)
