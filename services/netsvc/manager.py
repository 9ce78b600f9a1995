"""The endpoint manager: records, idempotency, reconciliation; kernel work goes to drivers."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Protocol

from skiff.common.errors import AlreadyExists, InvalidArgument, NotFound
from skiff.netsvc.drivers import NetworkDriver
from skiff.netsvc.model import Endpoint, validate_container_id
from skiff.netsvc.store import EndpointStore

log = logging.getLogger(__name__)

ENDPOINT_NOT_FOUND = "ENDPOINT_NOT_FOUND"
UNKNOWN_NETWORK_MODE = "UNKNOWN_NETWORK_MODE"
ENDPOINT_MODE_MISMATCH = "ENDPOINT_MODE_MISMATCH"


class Network(Protocol):
    """What other services use of netsvc; the gRPC client implements the same calls."""

    def create_endpoint(self, container_id: str, network_mode: str) -> Endpoint: ...

    def get_endpoint(self, container_id: str) -> Endpoint: ...

    def list_endpoints(self) -> list[Endpoint]: ...

    def delete_endpoint(self, container_id: str) -> None: ...


class EndpointManager:
    """Implements :class:`Network` over a set of drivers and an :class:`EndpointStore`.

    One lock serialises changes: creating a namespace takes ~2 ms, so finer
    locking would buy nothing and cost correctness (the record file is rewritten whole).
    """

    def __init__(self, drivers: Iterable[NetworkDriver], store: EndpointStore):
        self.drivers = {d.mode: d for d in drivers}
        self.store = store
        self._lock = threading.Lock()
        self._endpoints = store.load()

    def _driver(self, mode: str) -> NetworkDriver:
        try:
            return self.drivers[mode]
        except KeyError:
            supported = ", ".join(sorted(self.drivers))
            raise InvalidArgument(
                f"unknown network mode {mode!r}: supported modes are {supported}",
                reason=UNKNOWN_NETWORK_MODE,
                metadata={"supported": supported},
            ) from None

    def create_endpoint(self, container_id: str, network_mode: str) -> Endpoint:
        validate_container_id(container_id)
        driver = self._driver(network_mode)
        with self._lock:
            existing = self._endpoints.get(container_id)
            if existing is not None:
                if existing.network_mode != network_mode:
                    raise AlreadyExists(
                        f"container {container_id} already has a {existing.network_mode!r} endpoint",
                        reason=ENDPOINT_MODE_MISMATCH,
                        metadata={"network_mode": existing.network_mode},
                    )
                return existing
            endpoint = driver.create_endpoint(container_id)
            self._endpoints[container_id] = endpoint
            try:
                self.store.save(self._endpoints)
            except BaseException:
                del self._endpoints[container_id]
                driver.delete_endpoint(endpoint)
                raise
            log.info("created %s endpoint for %s", network_mode, container_id)
            return endpoint

    def get_endpoint(self, container_id: str) -> Endpoint:
        with self._lock:
            endpoint = self._endpoints.get(container_id)
        if endpoint is None:
            raise NotFound(f"no endpoint for container {container_id!r}", reason=ENDPOINT_NOT_FOUND)
        return endpoint

    def list_endpoints(self) -> list[Endpoint]:
        with self._lock:
            return [e for _, e in sorted(self._endpoints.items())]

    def delete_endpoint(self, container_id: str) -> None:
        with self._lock:
            endpoint = self._endpoints.get(container_id)
            if endpoint is None:
                return
            # Kernel first, record second: a crash in between leaves a record whose
            # namespace is gone, which reconcile() drops at the next start.
            self._driver(endpoint.network_mode).delete_endpoint(endpoint)
            del self._endpoints[container_id]
            self.store.save(self._endpoints)
            log.info("deleted endpoint of %s", container_id)

    def close(self) -> None:
        """Let each driver give back what it holds only for itself (never a live endpoint)."""
        for driver in self.drivers.values():
            driver.close()

    def reconcile(self) -> None:
        """Make records and kernel agree after a restart (or a crash).

        A record whose kernel side is gone is dropped (the container must be
        given a new endpoint; its old namespace is unrecoverable anyway). A
        kernel object with no record is removed.
        """
        with self._lock:
            changed = False
            for cid, endpoint in list(self._endpoints.items()):
                driver = self.drivers.get(endpoint.network_mode)
                if driver is None or not driver.is_alive(endpoint):
                    log.warning("dropping endpoint of %s (%s): its namespace is gone",
                                cid, endpoint.network_mode)
                    if driver is not None:
                        driver.delete_endpoint(endpoint)  # debris, e.g. an unmounted file
                    del self._endpoints[cid]
                    changed = True
            for driver in self.drivers.values():
                owned = {cid for cid, e in self._endpoints.items() if e.network_mode == driver.mode}
                for name in driver.orphans(owned):
                    log.warning("removing orphaned %s endpoint %s (no record)", driver.mode, name)
                    driver.remove_orphan(name)
            if changed:
                self.store.save(self._endpoints)
