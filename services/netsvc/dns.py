"""The embedded DNS server of user networks (Docker's 127.0.0.11).

Per container on a user network, netsvc holds one UDP socket bound to
``127.0.0.11:53`` *inside the container's namespace*: a short-lived thread
``setns()``es into it and makes the socket, which keeps that namespace for its
whole life (a socket belongs to the namespace it was made in). No address is
added: a namespace's ``lo`` (up, 127.0.0.1/8) already carries the local route
for all of 127.0.0.0/8, so 127.0.0.11 can be bound as it is, and nothing in the
container's interface list changes. One netsvc thread serves every socket with
a selector loop:

* an ``A`` (``AAAA``) query for a name of the container's networks (container
  names, aliases, short ids) is answered with its IPv4 (IPv6) addresses from
  netsvc's records (TTL 600, as Docker); another query type for such a name gets
  an empty NOERROR answer;
* anything else is forwarded, raw, to the container's ``--dns`` servers, else the
  host's upstream resolvers (from a bounded pool of worker threads, 2 s per
  upstream), and the reply relayed; with no upstream, or none answering, the
  client gets SERVFAIL.

UDP only (a later version may add TCP for large answers).
"""

from __future__ import annotations

import logging
import selectors
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from skiff.netsvc import netns

log = logging.getLogger(__name__)

DNS_ADDRESS = "127.0.0.11"
DNS_PORT = 53
TTL = 600
QTYPE_A = 1
QTYPE_AAAA = 28
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3
FORWARD_TIMEOUT = 2.0
MAX_FORWARDS = 16

#: A name's addresses (None: not a name of this network: forward the query).
Resolver = Callable[[str], "list[str] | None"]


class Query:
    """The parts of a query we need: its id, flags, first question and where the question ends."""

    def __init__(self, ident: int, flags: int, name: str, qtype: int, qclass: int, end: int):
        self.id, self.flags, self.name, self.qtype, self.qclass, self.end = ident, flags, name, qtype, qclass, end


def parse_query(data: bytes) -> Query | None:
    """The query in ``data``, or None for anything that is not a query with one question."""
    if len(data) < 12:
        return None
    ident, flags, qdcount = struct.unpack("!HHH", data[:6])
    if flags & 0x8000 or qdcount != 1:
        return None
    labels: list[str] = []
    pos = 12
    for _ in range(128):  # bounded: a name has at most 127 labels
        if pos >= len(data):
            return None
        n = data[pos]
        pos += 1
        if n == 0:
            break
        if n & 0xC0 or pos + n > len(data):
            return None  # no compression in a question
        labels.append(data[pos:pos + n].decode("ascii", "replace"))
        pos += n
    else:
        return None
    if pos + 4 > len(data):
        return None
    qtype, qclass = struct.unpack("!HH", data[pos:pos + 4])
    return Query(ident, flags, ".".join(labels).lower(), qtype, qclass, pos + 4)


def _record(address: str) -> tuple[int, bytes]:
    """(record type, packed address) of an IPv4 or IPv6 address."""
    if ":" in address:
        return QTYPE_AAAA, socket.inet_pton(socket.AF_INET6, address)
    return QTYPE_A, socket.inet_aton(address)


def response(data: bytes, q: Query, addresses: Sequence[str] = (), rcode: int = 0) -> bytes:
    """A reply to ``q``: its question echoed, then one A or AAAA record per address of the
    asked-for type (the others are left out)."""
    flags = 0x8000 | (q.flags & 0x0100) | 0x0400 | 0x0080 | rcode  # QR, RD copied, AA, RA
    records = [r for r in map(_record, addresses) if r[0] == q.qtype]
    header = struct.pack("!HHHHHH", q.id, flags, 1, len(records), 0, 0)
    answers = b"".join(struct.pack("!HHHIH", 0xC00C, qtype, 1, TTL, len(packed)) + packed
                       for qtype, packed in records)
    return header + data[12:q.end] + answers


def host_upstreams(resolv_text: str) -> list[tuple[str, int]]:
    """The host's resolvers a netsvc in the host namespace can use (IPv4, not 127.x: the stub is skipped)."""
    from skiff.netsvc.etcfiles import parse_resolv

    out = []
    for ns in parse_resolv(resolv_text)[0]:
        if ":" not in ns and not ns.startswith("127."):
            out.append((ns, DNS_PORT))
    return out


def socket_in_netns(path: str, address: str = DNS_ADDRESS, port: int = DNS_PORT) -> socket.socket:
    """A UDP socket bound to ``address:port`` inside the namespace at ``path`` (made by a throwaway
    thread that ``setns()``es: a socket belongs to the namespace it was made in)."""
    s = netns.socket_in(Path(path))
    try:
        s.bind((address, port))
    except BaseException:
        s.close()
        raise
    return s


class DnsServer:
    """Serves every container's 127.0.0.11 socket from one selector thread."""

    def __init__(self, upstreams: Callable[[], list[tuple[str, int]]]):
        self.upstreams = upstreams
        self._sel = selectors.DefaultSelector()
        self._socks: dict[str, tuple[socket.socket, Resolver]] = {}
        #: a container's own upstreams (``--dns``), in place of the host's
        self._own_upstreams: dict[str, list[tuple[str, int]]] = {}
        self._lock = threading.RLock()
        self._forwards = threading.BoundedSemaphore(MAX_FORWARDS)
        self._wake_r, self._wake_w = socket.socketpair()
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="dns", daemon=True)
        self._thread.start()

    def attach(self, key: str, netns_path: str, resolve: Resolver,
               upstreams: Sequence[tuple[str, int]] = ()) -> None:
        """Serve ``127.0.0.11:53`` in the namespace at ``netns_path`` for ``key`` (a container id);
        names it does not know go to ``upstreams`` (its ``--dns``), else to the host's."""
        self.detach(key)  # a socket of an earlier attach holds the address
        self.attach_socket(key, socket_in_netns(netns_path), resolve, upstreams)

    def attach_socket(self, key: str, sock: socket.socket, resolve: Resolver,
                      upstreams: Sequence[tuple[str, int]] = ()) -> None:
        sock.setblocking(False)
        with self._lock:
            self.detach(key)
            self._socks[key] = (sock, resolve)
            if upstreams:
                self._own_upstreams[key] = list(upstreams)
            self._sel.register(sock, selectors.EVENT_READ, key)
        self._wake_w.send(b"x")

    def detach(self, key: str) -> None:
        with self._lock:
            entry = self._socks.pop(key, None)
            self._own_upstreams.pop(key, None)
            if entry is not None:
                try:
                    self._sel.unregister(entry[0])
                except (KeyError, ValueError):
                    pass
                entry[0].close()

    def keys(self) -> set[str]:
        with self._lock:
            return set(self._socks)

    def close(self) -> None:
        self._stop = True
        self._wake_w.send(b"x")
        self._thread.join(timeout=5)
        for key in list(self.keys()):
            self.detach(key)
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    def _loop(self) -> None:
        while not self._stop:
            for selkey, _ in self._sel.select(timeout=1.0):
                if selkey.data is None:
                    try:
                        self._wake_r.recv(512)
                    except OSError:
                        pass
                    continue
                with self._lock:
                    entry = self._socks.get(selkey.data)
                if entry is None:
                    continue
                sock, resolve = entry
                try:
                    data, peer = sock.recvfrom(4096)
                except OSError:
                    continue
                try:
                    self._handle(sock, resolve, data, peer, selkey.data)
                except Exception:  # one bad packet must not stop the server
                    log.exception("dns: query from %s failed", peer)

    def _handle(self, sock: socket.socket, resolve: Resolver, data: bytes, peer: tuple[str, int],
                key: str = "") -> None:
        q = parse_query(data)
        if q is None:
            return
        addresses = resolve(q.name) if q.qclass == 1 else None
        if addresses is not None:
            sock.sendto(response(data, q, addresses), peer)
            return
        if not self._forwards.acquire(blocking=False):
            sock.sendto(response(data, q, rcode=RCODE_SERVFAIL), peer)
            return
        with self._lock:
            own = self._own_upstreams.get(key)
        threading.Thread(target=self._forward, args=(sock, data, q, peer, own), name="dns-forward",
                         daemon=True).start()

    def _forward(self, sock: socket.socket, data: bytes, q: Query, peer: tuple[str, int],
                 own: list[tuple[str, int]] | None = None) -> None:
        """Relay ``data`` to each upstream in turn until one answers (netsvc's own namespace)."""
        try:
            for upstream in own or self.upstreams():
                family = socket.AF_INET6 if ":" in upstream[0] else socket.AF_INET
                with socket.socket(family, socket.SOCK_DGRAM) as up:
                    up.settimeout(FORWARD_TIMEOUT)
                    try:
                        up.connect(upstream)
                        up.send(data)
                        reply = up.recv(65535)
                    except OSError:
                        continue
                    if reply[:2] == data[:2]:
                        sock.sendto(reply, peer)
                        return
            sock.sendto(response(data, q, rcode=RCODE_SERVFAIL), peer)
        except OSError as err:
            log.debug("dns: forwarding for %s: %s", peer, err)
        finally:
            self._forwards.release()
