"""Plain data of netsvc: an endpoint is a container's place on a network."""

from __future__ import annotations

import re
from dataclasses import dataclass

from skiff.common.errors import InvalidArgument

MODE_NONE = "none"
MODE_HOST = "host"

# The id names a file under <exec-root>/netns: keep it to a safe file name.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True)
class Endpoint:
    container_id: str
    network_mode: str
    #: Network namespace to join; empty when the container shares the host's.
    netns_path: str = ""


def validate_container_id(container_id: str) -> None:
    if not _ID.fullmatch(container_id):
        raise InvalidArgument(
            f"invalid container id {container_id!r}: use 1-128 of [A-Za-z0-9_.-], starting alphanumeric",
            reason="INVALID_CONTAINER_ID",
        )
