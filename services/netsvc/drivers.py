"""Network drivers: one per network mode, behind one small Protocol.

A driver makes and unmakes the kernel side of an endpoint; the
:class:`~skiff.netsvc.manager.EndpointManager` owns records, idempotency and
reconciliation. The bridge driver (veth pair, address, NAT) is in bridge.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from skiff.netsvc import netns
from skiff.netsvc.model import MODE_HOST, MODE_NONE, Endpoint, EndpointOptions


class NetworkDriver(Protocol):
    mode: str

    def create_endpoint(self, container_id: str, opts: EndpointOptions | None = None) -> Endpoint:
        """Make the endpoint; may be called again after a partial failure."""
        ...

    def delete_endpoint(self, endpoint: Endpoint) -> None:
        """Undo :meth:`create_endpoint`. Idempotent: a missing piece is not an error."""
        ...

    def is_alive(self, endpoint: Endpoint) -> bool:
        """Whether the kernel still has what the record describes (start-up reconciliation)."""
        ...

    def restore(self, endpoints: list[Endpoint]) -> None:
        """At start-up: the live records of this mode (a driver may rebuild its state from them)."""
        ...

    def orphans(self, known: set[str]) -> list[str]:
        """Kernel objects this driver made that no record in ``known`` (every live container id) owns."""
        ...

    def remove_orphan(self, name: str) -> None: ...

    def close(self) -> None:
        """At shutdown: release what the driver holds for itself (never a live endpoint)."""
        ...


class NoneDriver:
    """``none``: a fresh namespace with only ``lo``, up; kept as ``<netns_dir>/<container_id>``."""

    mode = MODE_NONE

    def __init__(self, netns_dir: Path, pool: netns.Pool | None = None):
        self.netns_dir = netns_dir
        #: Namespaces made ahead of time (netns.Pool), shared with the bridge drivers; None: off.
        self.pool = pool

    def path(self, container_id: str) -> Path:
        return self.netns_dir / container_id

    def create_endpoint(self, container_id: str, opts: EndpointOptions | None = None) -> Endpoint:
        netns.ensure_mount_point(self.netns_dir)  # made when first needed, released by close()
        path = self.path(container_id)
        netns.create(path, pool=self.pool)
        return Endpoint(container_id, self.mode, str(path))

    def close(self) -> None:
        """At shutdown: give back the netns directory's own mount when no namespace is left in it."""
        if netns.is_mounted(self.netns_dir) and not netns.mounted_under(self.netns_dir):
            netns.umount(str(self.netns_dir))

    def delete_endpoint(self, endpoint: Endpoint) -> None:
        netns.remove(self.path(endpoint.container_id))

    def restore(self, endpoints: list[Endpoint]) -> None:
        pass

    def is_alive(self, endpoint: Endpoint) -> bool:
        return netns.is_mounted(self.path(endpoint.container_id))

    def orphans(self, known: set[str]) -> list[str]:
        mounted = netns.mounted_under(self.netns_dir)
        # A plain file with no mount is debris of a crash between create and mount.
        files = {p.name for p in self.netns_dir.iterdir()} if self.netns_dir.is_dir() else set()
        return sorted((mounted | files) - known)

    def remove_orphan(self, name: str) -> None:
        netns.remove(self.path(name))


class HostDriver:
    """``host``: the container shares the host's namespace; nothing to make."""

    mode = MODE_HOST

    def create_endpoint(self, container_id: str, opts: EndpointOptions | None = None) -> Endpoint:
        return Endpoint(container_id, self.mode, "")

    def delete_endpoint(self, endpoint: Endpoint) -> None:
        pass

    def is_alive(self, endpoint: Endpoint) -> bool:
        return True

    def restore(self, endpoints: list[Endpoint]) -> None:
        pass

    def orphans(self, known: set[str]) -> list[str]:
        return []

    def remove_orphan(self, name: str) -> None:
        pass

    def close(self) -> None:
        pass


class JoinDriver:
    """``container:<id>``: the endpoint is another container's namespace; this driver owns nothing."""

    mode = "container"

    def create_endpoint(self, container_id: str, opts: EndpointOptions | None = None) -> Endpoint:
        raise AssertionError("the manager makes container: endpoints itself")

    def delete_endpoint(self, endpoint: Endpoint) -> None:
        pass

    def is_alive(self, endpoint: Endpoint) -> bool:
        return netns.is_mounted(Path(endpoint.netns_path))

    def restore(self, endpoints: list[Endpoint]) -> None:
        pass

    def orphans(self, known: set[str]) -> list[str]:
        return []

    def remove_orphan(self, name: str) -> None:
        pass

    def close(self) -> None:
        pass
