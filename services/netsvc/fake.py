"""An in-memory NetworkDriver for unit tests: no root, no kernel."""

from __future__ import annotations

from skiff.netsvc.model import MODE_NONE, Endpoint, EndpointOptions


class FakeDriver:
    """Keeps "namespaces" in a set; tests add to ``.live`` to plant orphans or remove to fake loss."""

    def __init__(self, mode: str = MODE_NONE):
        self.mode = mode
        self.live: set[str] = set()
        self.calls: list[tuple[str, str]] = []

    def create_endpoint(self, container_id: str, opts: EndpointOptions | None = None) -> Endpoint:
        self.calls.append(("create", container_id))
        self.live.add(container_id)
        return Endpoint(container_id, self.mode, f"/fake/netns/{container_id}")

    def delete_endpoint(self, endpoint: Endpoint) -> None:
        self.calls.append(("delete", endpoint.container_id))
        self.live.discard(endpoint.container_id)

    def is_alive(self, endpoint: Endpoint) -> bool:
        return endpoint.container_id in self.live

    def restore(self, endpoints: list[Endpoint]) -> None:
        self.calls.append(("restore", ",".join(e.container_id for e in endpoints)))

    def orphans(self, known: set[str]) -> list[str]:
        return sorted(self.live - known)

    def remove_orphan(self, name: str) -> None:
        self.calls.append(("remove_orphan", name))
        self.live.discard(name)

    def close(self) -> None:
        self.calls.append(("close", ""))
