"""The endpoint manager: records, idempotency, reconciliation; kernel work goes to drivers."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from skiff.common import itemerr
from skiff.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, SkiffError
from skiff.common.faults import crash_point
from skiff.netsvc import etcfiles, netns, rtnl
from skiff.netsvc.drivers import NetworkDriver
from skiff.netsvc.model import MODE_HOST, Endpoint, EndpointOptions, validate_container_id
from skiff.netsvc.store import EndpointStore

if TYPE_CHECKING:
    from skiff.netsvc.networks import Networks

log = logging.getLogger(__name__)

ENDPOINT_NOT_FOUND = "ENDPOINT_NOT_FOUND"
UNKNOWN_NETWORK_MODE = "UNKNOWN_NETWORK_MODE"
ENDPOINT_MODE_MISMATCH = "ENDPOINT_MODE_MISMATCH"
CONTAINER_NOT_RUNNING = "CONTAINER_NOT_RUNNING"
#: ``container:<id>``: join another container's namespace (drivers.JoinDriver).
MODE_CONTAINER_PREFIX = "container:"


class Network(Protocol):
    """What other services use of netsvc; the gRPC client implements the same calls."""

    def create_endpoint(self, container_id: str, network_mode: str,
                        opts: EndpointOptions | None = None) -> Endpoint: ...

    def get_endpoint(self, container_id: str) -> Endpoint: ...

    def list_endpoints(self) -> list[Endpoint]: ...

    def delete_endpoint(self, container_id: str, release: bool = False) -> None: ...

    def delete_endpoints(self, container_ids: list[str]) -> dict[str, SkiffError]:
        """delete_endpoint (a removal) of each; the ones that failed, with why."""
        ...


class EndpointManager:
    """Implements :class:`Network` over a set of drivers and an :class:`EndpointStore`.

    One lock serialises changes: creating a namespace takes ~2 ms, so finer
    locking would buy nothing and cost correctness (the record file is rewritten whole).
    """

    def __init__(self, drivers: Iterable[NetworkDriver], store: EndpointStore,
                 host_resolv: Callable[[], str] = etcfiles.read_host_resolv,
                 host_hosts: Callable[[], str] = etcfiles.read_host_hosts):
        self.drivers = {d.mode: d for d in drivers}
        self.store = store
        self.host_resolv = host_resolv
        self.host_hosts = host_hosts
        self._lock = threading.Lock()
        self._endpoints = store.load()
        #: Deletions whose slow kernel part is still to do: (driver, its Release), oldest first;
        #: done by one thread (_reap), journaled in the record file (see _save).
        self._cleanup: deque[tuple[Any, Any]] = deque()
        self._cleanup_cv = threading.Condition()
        self._reaper: threading.Thread | None = None
        self._closing = False
        #: User-defined networks (networks.py); set by the server when enabled.
        self.networks: Networks | None = None
        #: Namespaces made ahead of time (netns.Pool) the drivers take from; emptied by close().
        self.pool: netns.Pool | None = None

    def _driver(self, mode: str) -> NetworkDriver:
        if mode.startswith(MODE_CONTAINER_PREFIX):
            mode = "container"
        try:
            return self.drivers[mode]
        except KeyError:
            supported = ", ".join(sorted(self.drivers))
            raise InvalidArgument(
                f"unknown network mode {mode!r}: supported modes are {supported}",
                reason=UNKNOWN_NETWORK_MODE,
                metadata={"supported": supported},
            ) from None

    def etc_files(self, endpoint: Endpoint, opts: EndpointOptions) -> Endpoint:
        """The endpoint with its /etc/hosts and /etc/resolv.conf (host mode: the host's, as Docker).

        Without a hostname the caller asked for no files (the image's are kept).
        """
        if not opts.hostname:
            return endpoint
        if endpoint.network_mode == MODE_HOST:
            return dataclasses.replace(endpoint, hosts=self.host_hosts(), resolv_conf=self.host_resolv())
        hosts = etcfiles.hosts(opts.hostname, endpoint.ip_address, opts.extra_hosts, endpoint.gateway)
        resolv = etcfiles.resolv_conf(self.host_resolv(), opts.dns, opts.dns_search, opts.dns_options)
        if getattr(self.drivers.get(endpoint.network_mode), "embedded_dns", False):
            resolv = etcfiles.embedded_resolv_conf(self.host_resolv(), opts.dns_search, opts.dns_options)
        return dataclasses.replace(endpoint, hosts=hosts, resolv_conf=resolv)

    def create_endpoint(self, container_id: str, network_mode: str,
                        opts: EndpointOptions | None = None) -> Endpoint:
        validate_container_id(container_id)
        driver = self._driver(network_mode)
        opts = opts or EndpointOptions()
        for item in opts.extra_hosts:  # refuse a bad one before anything is made
            etcfiles.parse_extra_host(item, "0.0.0.0")
        for server in opts.dns:
            try:
                ipaddress.ip_address(server)
            except ValueError:
                raise InvalidArgument(f"--dns: {server} is not an ip address") from None
        with self._lock:
            existing = self._endpoints.get(container_id)
            if existing is None and network_mode.startswith(MODE_CONTAINER_PREFIX):
                return self._join(container_id, network_mode)
            if existing is not None:
                if existing.network_mode != network_mode:
                    raise AlreadyExists(
                        f"container {container_id} already has a {existing.network_mode!r} endpoint",
                        reason=ENDPOINT_MODE_MISMATCH,
                        metadata={"network_mode": existing.network_mode},
                    )
                return existing
            endpoint = driver.create_endpoint(container_id, opts)
            try:
                endpoint = self.etc_files(endpoint, opts)
                self._endpoints[container_id] = endpoint
                self._save()
            except BaseException:
                self._endpoints.pop(container_id, None)
                driver.delete_endpoint(endpoint)
                raise
            if self.networks is not None:
                self.networks.reattach(container_id)  # its `network connect`s, kept when it stopped
            log.info("created %s endpoint for %s", network_mode, container_id)
            return endpoint

    def _join(self, container_id: str, network_mode: str) -> Endpoint:
        """``container:<id>``: the other container's namespace and /etc files; nothing is made."""
        target = self._endpoints.get(network_mode[len(MODE_CONTAINER_PREFIX):])
        if target is None or not target.netns_path:
            raise FailedPrecondition(
                f"cannot join the network of container {network_mode[len(MODE_CONTAINER_PREFIX):]}: "
                "it is not running (or shares the host's)", reason=CONTAINER_NOT_RUNNING)
        endpoint = Endpoint(container_id, network_mode, target.netns_path, ip_address=target.ip_address,
                            prefix_length=target.prefix_length, gateway=target.gateway,
                            mac_address=target.mac_address, hosts=target.hosts, resolv_conf=target.resolv_conf)
        self._endpoints[container_id] = endpoint
        self._save()
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

    def delete_endpoint(self, container_id: str, release: bool = False) -> None:
        """Everything of the endpoint goes; ``release`` (a stop, not a removal) keeps its connections."""
        with self._lock:
            endpoint = self._endpoints.get(container_id)
            if endpoint is None:
                if not release and self.networks is not None:
                    self.networks.forget(container_id)
                return
            # Kernel first, record second: a crash in between leaves a record whose
            # namespace is gone, which reconcile() drops at the next start.
            driver = self._driver(endpoint.network_mode)
            begin = getattr(driver, "begin_delete", None)
            if self.networks is not None:  # connected interfaces: in the background too, when the namespace goes
                self.networks.detach_all(container_id, keep=release,
                                         defer=self._defer if begin is not None else None)
            if begin is None:
                driver.delete_endpoint(endpoint)
            else:  # the namespace goes now; the veth and the address in the background
                self._defer(driver, begin(endpoint))
            del self._endpoints[container_id]
            self._save()
            log.info("deleted endpoint of %s", container_id)

    def delete_endpoints(self, container_ids: list[str]) -> dict[str, SkiffError]:
        """:meth:`delete_endpoint` (a removal) of many under one lock, with one write of the
        records; one that fails is returned (with why) and the others go on. A crash before
        the write leaves records whose namespace is gone: reconcile() drops them."""
        failed: dict[str, SkiffError] = {}
        with self._lock:
            changed = False
            for i, cid in enumerate(container_ids):
                if i == len(container_ids) // 2:
                    crash_point("netsvc:delete-endpoints:mid")
                try:
                    endpoint = self._endpoints.get(cid)
                    if endpoint is None:
                        if self.networks is not None:
                            self.networks.forget(cid)
                        continue
                    # As delete_endpoint: the namespace now, the veth and the address in the background.
                    driver = self._driver(endpoint.network_mode)
                    begin = getattr(driver, "begin_delete", None)
                    if self.networks is not None:
                        self.networks.detach_all(cid, defer=self._defer if begin is not None else None)
                    if begin is None:
                        driver.delete_endpoint(endpoint)
                    else:
                        self._defer(driver, begin(endpoint))
                    del self._endpoints[cid]
                    changed = True
                    log.info("deleted endpoint of %s", cid)
                except Exception as e:  # that endpoint's own error
                    failed[cid] = itemerr.of_exception(e)
            if changed:
                self._save()
        return failed

    def _defer(self, driver: Any, item: Any) -> None:
        """Queue the second half of a deletion for the cleanup thread (the caller holds the lock)."""
        with self._cleanup_cv:
            self._cleanup.append((driver, item))
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._reap, name="netsvc-cleanup", daemon=True)
                self._reaper.start()
            self._cleanup_cv.notify()

    def _journal(self) -> list[str]:
        """Veths of deleted endpoints not yet deleted."""
        return [item.endpoint.veth for _, item in list(self._cleanup) if not item.finished and item.endpoint.veth]

    def _save(self) -> None:
        """The records, with the journal of unfinished deletions (the caller holds the lock)."""
        journal = self._journal()
        if journal:
            self.store.save(self._endpoints, journal)
        else:
            self.store.save(self._endpoints)

    def _reap(self) -> None:
        """The cleanup thread: the kernel part of each deletion without the lock, the rest with it."""
        while True:
            with self._cleanup_cv:
                while not self._cleanup and not self._closing:
                    self._cleanup_cv.wait()
                if not self._cleanup:
                    return
                entry = self._cleanup[0]
            driver, item = entry
            try:
                with self._lock:  # the delete that queued it has written its journal entry
                    pass
                driver.finish_kernel(item)
                with self._lock:
                    driver.complete(item)
            except Exception as err:  # left to the start-up clean-up (the journal, orphan veths)
                log.warning("cleaning up the endpoint of %s: %s", item.endpoint.container_id, err)
                item.finished = True
            with self._cleanup_cv:
                if entry in self._cleanup:
                    self._cleanup.remove(entry)
                self._cleanup_cv.notify_all()

    def drain(self) -> None:
        """Finish every deletion in progress: its veth deleted, its address given back."""
        with self._lock:
            pending = list(self._cleanup)
            for driver, item in pending:
                try:
                    driver.complete(item)
                except Exception as err:
                    log.warning("cleaning up the endpoint of %s: %s", item.endpoint.container_id, err)
                    item.finished = True
            with self._cleanup_cv:
                for entry in pending:
                    if entry in self._cleanup:
                        self._cleanup.remove(entry)
                self._cleanup_cv.notify_all()
            if pending:
                self._save()

    def close(self) -> None:
        """Finish the deletions in progress, then let each driver give back what it holds only for
        itself (never a live endpoint)."""
        self.drain()
        with self._cleanup_cv:
            self._closing = True
            self._cleanup_cv.notify_all()
        if self._reaper is not None:
            self._reaper.join(timeout=60)
        if self.pool is not None:
            self.pool.close()
        for driver in self.drivers.values():
            driver.close()
        close = getattr(self.store, "close", None)
        if close is not None:  # the records in one file again (the log of changes folded in)
            with self._lock:
                close(self._endpoints, self._journal())

    def reconcile(self) -> None:
        """Make records and kernel agree after a restart (or a crash).

        A record whose kernel side is gone is dropped (the container must be
        given a new endpoint; its old namespace is unrecoverable anyway). A
        kernel object with no record is removed.
        """
        with self._lock:
            # Deletions interrupted by a crash: their veths go before any address is handed out.
            journal = self.store.load_cleanup() if hasattr(self.store, "load_cleanup") else []
            owned = {e.veth for e in self._endpoints.values()}
            for veth in journal:
                if veth not in owned:
                    try:
                        if rtnl.del_link(veth):
                            log.warning("removed veth %s of an endpoint deleted before a crash", veth)
                    except OSError as err:
                        log.warning("cannot remove veth %s: %s", veth, err)
            changed = bool(journal)
            for cid, endpoint in list(self._endpoints.items()):
                mode = endpoint.network_mode
                driver = self.drivers.get("container" if mode.startswith(MODE_CONTAINER_PREFIX) else mode)
                if driver is None or not driver.is_alive(endpoint):
                    log.warning("dropping endpoint of %s (%s): its namespace is gone",
                                cid, endpoint.network_mode)
                    if driver is not None:
                        driver.delete_endpoint(endpoint)  # debris, e.g. an unmounted file
                    del self._endpoints[cid]
                    changed = True
            known = set(self._endpoints)
            attached = self.networks.live_attachments(known) if self.networks is not None else {}
            for driver in self.drivers.values():
                driver.restore([e for _, e in sorted(self._endpoints.items()) if e.network_mode == driver.mode]
                               + attached.get(driver.mode, []))
                for name in driver.orphans(known):
                    log.warning("removing orphaned %s endpoint %s (no record)", driver.mode, name)
                    driver.remove_orphan(name)
            if changed:
                self._save()
