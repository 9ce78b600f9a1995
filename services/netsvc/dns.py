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

TCP as well, as Docker's: beside the UDP socket, a TCP listener on the same
``127.0.0.11:53`` (made by the same ``setns()`` thread). A UDP answer larger
than the client can take (512 bytes, or its EDNS0 payload size) is truncated
with the TC bit set (to whole records that fit), so the client asks again
over TCP. The selector thread only accepts
TCP connections; each is then served by a thread of its own (at most
``MAX_TCP_CONNECTIONS`` at a time, more are closed at once; ``TCP_IDLE_TIMEOUT``
per read, ``TCP_MAX_QUERIES`` and ``TCP_MAX_LIFETIME`` per connection), which answers known names
itself and relays the rest to the upstreams over TCP. A slow or silent TCP
client therefore never holds up the UDP path.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import struct
import threading
import time
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
#: What a UDP answer may hold without EDNS0 (RFC 1035 4.2.1); larger ones are truncated (TC).
UDP_MAX_SIZE = 512
#: The largest EDNS0 payload size honoured (a client may announce more).
EDNS_MAX_SIZE = 4096
QTYPE_OPT = 41
FLAG_TC = 0x0200
MAX_TCP_CONNECTIONS = 32
TCP_IDLE_TIMEOUT = 10.0
TCP_MAX_QUERIES = 64
#: The longest a TCP connection is served, however busy (RFC 7766 lets the server close it).
TCP_MAX_LIFETIME = 60.0

#: A name's addresses (None: not a name of this network: forward the query).
Resolver = Callable[[str], "list[str] | None"]


class Query:
    """The parts of a query we need: its id, flags, first question and where the question ends."""

    def __init__(self, ident: int, flags: int, name: str, qtype: int, qclass: int, end: int,
                 udp_size: int = UDP_MAX_SIZE):
        self.id, self.flags, self.name, self.qtype, self.qclass, self.end = ident, flags, name, qtype, qclass, end
        #: the largest UDP answer the client takes (512, or its EDNS0 size)
        self.udp_size = udp_size


def parse_query(data: bytes) -> Query | None:
    """The query in ``data``, or None for anything that is not a query with one question."""
    if len(data) < 12:
        return None
    ident, flags, qdcount, _, _, arcount = struct.unpack("!HHHHHH", data[:12])
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
    return Query(ident, flags, ".".join(labels).lower(), qtype, qclass, pos + 4,
                 _edns_size(data, pos + 4) if arcount else UDP_MAX_SIZE)


def _edns_size(data: bytes, pos: int) -> int:
    """The EDNS0 payload size of an OPT record (root name, type 41, class = size) at ``pos``
    (the first additional record of a query), within 512..EDNS_MAX_SIZE; 512 without one."""
    if data[pos:pos + 1] != b"\x00" or pos + 5 > len(data):
        return UDP_MAX_SIZE
    rtype, size = struct.unpack("!HH", data[pos + 1:pos + 5])
    if rtype != QTYPE_OPT:
        return UDP_MAX_SIZE
    return max(UDP_MAX_SIZE, min(size, EDNS_MAX_SIZE))


def _record(address: str) -> tuple[int, bytes]:
    """(record type, packed address) of an IPv4 or IPv6 address."""
    if ":" in address:
        return QTYPE_AAAA, socket.inet_pton(socket.AF_INET6, address)
    return QTYPE_A, socket.inet_aton(address)


def response(data: bytes, q: Query, addresses: Sequence[str] = (), rcode: int = 0,
             limit: int | None = None) -> bytes:
    """A reply to ``q``: its question echoed, then one A or AAAA record per address of the
    asked-for type (the others are left out). ``limit``: the most bytes it may take (a UDP
    answer); records that do not fit are left out, whole, and the TC bit is set."""
    flags = 0x8000 | (q.flags & 0x0100) | 0x0400 | 0x0080 | rcode  # QR, RD copied, AA, RA
    answers = [struct.pack("!HHHIH", 0xC00C, qtype, 1, TTL, len(packed)) + packed
               for qtype, packed in map(_record, addresses) if qtype == q.qtype]
    question = data[12:q.end]
    if limit is not None:
        room = limit - 12 - len(question)
        fit = 0
        while fit < len(answers) and room >= len(answers[fit]):
            room -= len(answers[fit])
            fit += 1
        if fit < len(answers):
            flags |= FLAG_TC
            answers = answers[:fit]
    header = struct.pack("!HHHHHH", q.id, flags, 1, len(answers), 0, 0)
    return header + question + b"".join(answers)


def _skip_name(msg: bytes, pos: int) -> int:
    """The offset after a (possibly compressed) name at ``pos``; ValueError if it runs off the end."""
    for _ in range(128):
        if pos >= len(msg):
            raise ValueError("name past the end")
        n = msg[pos]
        if n & 0xC0 == 0xC0:
            return pos + 2  # a pointer ends the name
        pos += 1 + n
        if n == 0:
            return pos
    raise ValueError("name too long")


def _record_ends(msg: bytes) -> tuple[int, list[int]]:
    """(where the question section ends, where each record after it ends, in order)."""
    qd, an, ns, ar = struct.unpack("!HHHH", msg[4:12])
    pos = 12
    for _ in range(qd):
        pos = _skip_name(msg, pos) + 4
    start, ends = pos, []
    for _ in range(an + ns + ar):
        pos = _skip_name(msg, pos)
        if pos + 10 > len(msg):
            raise ValueError("record past the end")
        pos += 10 + struct.unpack("!H", msg[pos + 8:pos + 10])[0]
        if pos > len(msg):
            raise ValueError("record past the end")
        ends.append(pos)
    return start, ends


def truncated(reply: bytes, data: bytes, q: Query) -> bytes:
    """A relayed ``reply`` too large for the client's UDP size, with the TC bit set: as many of
    its records as fit, whole (a prefix of the message, so its compression pointers stay
    valid), else just its question (``data``'s); the client asks again over TCP."""
    ident, flags = struct.unpack("!HH", reply[:4])
    try:
        start, ends = _record_ends(reply)
        if start > q.udp_size:
            raise ValueError("question too large")
        kept = sum(1 for end in ends if end <= q.udp_size)  # ends grow: a prefix of the records
        an, ns, _ = struct.unpack("!HHH", reply[6:12])
        counts = (min(kept, an), min(max(kept - an, 0), ns), max(kept - an - ns, 0))
        body = reply[12:ends[kept - 1] if kept else start]
        qd = struct.unpack("!H", reply[4:6])[0]
        return struct.pack("!HHHHHH", ident, flags | FLAG_TC, qd, *counts) + body
    except (ValueError, struct.error):
        return struct.pack("!HHHHHH", ident, flags | FLAG_TC, 1, 0, 0, 0) + data[12:q.end]


def udp_reply(reply: bytes, data: bytes, q: Query) -> bytes:
    """``reply`` as it may go back over UDP to the client of ``q`` (truncated if too large)."""
    return reply if len(reply) <= q.udp_size else truncated(reply, data, q)


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


def sockets_in_netns(path: str, address: str = DNS_ADDRESS,
                     port: int = DNS_PORT) -> tuple[socket.socket, socket.socket]:
    """A bound UDP socket and a listening TCP socket on ``address:port`` inside the namespace at
    ``path``, both made by one throwaway thread that ``setns()``es into it."""
    result: list[BaseException | tuple[socket.socket, socket.socket]] = []

    def body() -> None:
        made: list[socket.socket] = []
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                netns._check(netns._libc.setns(fd, netns.CLONE_NEWNET), f"setns({path})")
            finally:
                os.close(fd)
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            made.append(udp)
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            made.append(tcp)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            udp.bind((address, port))
            tcp.bind((address, port))
            tcp.listen(MAX_TCP_CONNECTIONS)
            result.append((udp, tcp))
        except BaseException as err:
            for s in made:
                s.close()
            result.append(err)

    pair: tuple[socket.socket, socket.socket] = netns.run_in_thread(body, result, "dns-sockets")
    return pair


def _recv_exactly(sock: socket.socket, n: int) -> bytes | None:
    """``n`` bytes from a stream (None: the peer closed first)."""
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def recv_message(sock: socket.socket) -> bytes | None:
    """One DNS message over TCP (two-byte length, then the message; RFC 1035 4.2.2), None at EOF."""
    head = _recv_exactly(sock, 2)
    if head is None:
        return None
    (length,) = struct.unpack("!H", head)
    return _recv_exactly(sock, length) if length else None


def send_message(sock: socket.socket, message: bytes) -> None:
    sock.sendall(struct.pack("!H", len(message)) + message)


def _shutdown(conns: Sequence[socket.socket]) -> None:
    for conn in conns:
        try:
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class DnsServer:
    """Serves every container's 127.0.0.11 sockets (UDP, and TCP accepts) from one selector thread."""

    def __init__(self, upstreams: Callable[[], list[tuple[str, int]]]):
        self.upstreams = upstreams
        self._sel = selectors.DefaultSelector()
        self._socks: dict[str, tuple[socket.socket, Resolver]] = {}
        #: a container's TCP listener (registered with the selector as ``("tcp", key)``)
        self._listeners: dict[str, socket.socket] = {}
        #: a container's own upstreams (``--dns``), in place of the host's
        self._own_upstreams: dict[str, list[tuple[str, int]]] = {}
        self._lock = threading.RLock()
        self._forwards = threading.BoundedSemaphore(MAX_FORWARDS)
        self._tcp_slots = threading.BoundedSemaphore(MAX_TCP_CONNECTIONS)
        #: open TCP connections and their keys (shut down by :meth:`detach` and :meth:`close`)
        self._conns: dict[socket.socket, str] = {}
        self._wake_r, self._wake_w = socket.socketpair()
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="dns", daemon=True)
        self._thread.start()

    def attach(self, key: str, netns_path: str, resolve: Resolver,
               upstreams: Sequence[tuple[str, int]] = ()) -> None:
        """Serve ``127.0.0.11:53`` (UDP and TCP) in the namespace at ``netns_path`` for ``key`` (a
        container id); names it does not know go to ``upstreams`` (its ``--dns``), else to the host's."""
        self.detach(key)  # sockets of an earlier attach hold the address
        udp, tcp = sockets_in_netns(netns_path)
        self.attach_socket(key, udp, resolve, upstreams, tcp)

    def attach_socket(self, key: str, sock: socket.socket, resolve: Resolver,
                      upstreams: Sequence[tuple[str, int]] = (), tcp: socket.socket | None = None) -> None:
        """Serve ``sock`` (UDP) and, if given, the listening ``tcp`` socket for ``key``."""
        sock.setblocking(False)
        if tcp is not None:
            tcp.setblocking(False)
        with self._lock:
            self.detach(key)
            self._socks[key] = (sock, resolve)
            if upstreams:
                self._own_upstreams[key] = list(upstreams)
            self._sel.register(sock, selectors.EVENT_READ, key)
            if tcp is not None:
                self._listeners[key] = tcp
                self._sel.register(tcp, selectors.EVENT_READ, ("tcp", key))
        self._wake_w.send(b"x")

    def detach(self, key: str) -> None:
        with self._lock:
            entry = self._socks.pop(key, None)
            self._own_upstreams.pop(key, None)
            tcp = self._listeners.pop(key, None)
            for s in ([entry[0]] if entry is not None else []) + ([tcp] if tcp is not None else []):
                try:
                    self._sel.unregister(s)
                except (KeyError, ValueError):
                    pass
                s.close()
            conns = [conn for conn, k in self._conns.items() if k == key]
        _shutdown(conns)  # their threads see the error, close them and end

    def keys(self) -> set[str]:
        with self._lock:
            return set(self._socks)

    def close(self) -> None:
        self._stop = True
        self._wake_w.send(b"x")
        self._thread.join(timeout=5)
        for key in list(self.keys()):
            self.detach(key)
        with self._lock:
            conns = list(self._conns)
        _shutdown(conns)
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
                if isinstance(selkey.data, tuple):
                    self._accept(selkey.data[1])
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

    def _accept(self, key: str) -> None:
        """Take one TCP connection of ``key``'s listener and serve it from a thread of its own;
        past ``MAX_TCP_CONNECTIONS`` open ones, it is closed at once."""
        with self._lock:
            listener = self._listeners.get(key)
            entry = self._socks.get(key)
        if listener is None or entry is None:
            return
        try:
            conn, peer = listener.accept()
        except OSError:
            return
        if not self._tcp_slots.acquire(blocking=False):
            conn.close()
            return
        conn.setblocking(True)
        conn.settimeout(TCP_IDLE_TIMEOUT)
        with self._lock:
            self._conns[conn] = key
        try:
            threading.Thread(target=self._serve_tcp, args=(conn, peer, entry[1], key), name="dns-tcp",
                             daemon=True).start()
        except BaseException:
            with self._lock:
                self._conns.pop(conn, None)
            conn.close()
            self._tcp_slots.release()
            raise

    def _serve_tcp(self, conn: socket.socket, peer: tuple[str, int], resolve: Resolver, key: str) -> None:
        """Answer the queries of one TCP connection in turn until the client closes it, is idle
        for ``TCP_IDLE_TIMEOUT``, has asked ``TCP_MAX_QUERIES`` or ``TCP_MAX_LIFETIME`` is over."""
        deadline = time.monotonic() + TCP_MAX_LIFETIME
        try:
            for _ in range(TCP_MAX_QUERIES):
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                conn.settimeout(min(TCP_IDLE_TIMEOUT, left))
                data = recv_message(conn)
                if data is None or self._stop:
                    return
                q = parse_query(data)
                if q is None:
                    return
                addresses = resolve(q.name) if q.qclass == 1 else None
                if addresses is not None:
                    send_message(conn, response(data, q, addresses))
                    continue
                with self._lock:
                    own = self._own_upstreams.get(key)
                reply = self._forward_tcp(data, own)
                send_message(conn, reply if reply is not None else response(data, q, rcode=RCODE_SERVFAIL))
        except OSError as err:
            log.debug("dns: tcp client %s: %s", peer, err)
        except Exception:
            log.exception("dns: tcp query from %s failed", peer)
        finally:
            with self._lock:
                self._conns.pop(conn, None)
            conn.close()
            self._tcp_slots.release()

    def _forward_tcp(self, data: bytes, own: list[tuple[str, int]] | None) -> bytes | None:
        """``data`` relayed over TCP to each upstream in turn until one answers (None: none did)."""
        for upstream in own or self.upstreams():
            family = socket.AF_INET6 if ":" in upstream[0] else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as up:
                up.settimeout(FORWARD_TIMEOUT)
                try:
                    up.connect(upstream)
                    send_message(up, data)
                    reply = recv_message(up)
                except OSError:
                    continue
                if reply is not None and reply[:2] == data[:2]:
                    return reply
        return None

    def _handle(self, sock: socket.socket, resolve: Resolver, data: bytes, peer: tuple[str, int],
                key: str = "") -> None:
        q = parse_query(data)
        if q is None:
            return
        addresses = resolve(q.name) if q.qclass == 1 else None
        if addresses is not None:
            sock.sendto(response(data, q, addresses, limit=q.udp_size), peer)
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
        """Relay ``data`` to each upstream in turn until one answers (netsvc's own namespace); a
        reply larger than the client takes goes back truncated (TC)."""
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
                        sock.sendto(udp_reply(reply, data, q), peer)
                        return
            sock.sendto(response(data, q, rcode=RCODE_SERVFAIL), peer)
        except OSError as err:
            log.debug("dns: forwarding for %s: %s", peer, err)
        finally:
            self._forwards.release()
