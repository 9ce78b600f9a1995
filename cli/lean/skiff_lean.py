"""A lean gRPC client for the hot commands (`run`/`create` without -i/-t, `start`, `wait`, `rm`).

The full CLI imports grpcio and the generated protobuf modules (~100 ms before the
first call). This module needs neither: it speaks HTTP/2 (RFC 7540: frames, streams,
flow control) with HPACK (RFC 7541: static and dynamic table, Huffman decoding) and
encodes/decodes the few protobuf messages it needs by hand (proto3 wire format). It is
a real gRPC client of the public gateway over its unix socket (the same RPCs as the full
CLI: Create, Attach, Start, Wait, Remove), and it runs under ``python -I -S`` (see
``deploy/skiff-launcher.py``).

:func:`main` returns ``None`` for anything it does not handle (another command, a flag
it does not know, TLS/tcp hosts, ``-i``/``-t``, a create/start/wait/rm that fails for
any reason: nothing has happened yet then), and the caller runs the full CLI with the
same argv, which does the command and reports as always.
After a successful create it sees the command through, with the full CLI's messages
and exit statuses.
"""

from __future__ import annotations

import _signal  # the C modules: `socket` and `signal` would pull in enum, selectors, ...
import _socket
import os
import struct
import sys

DEFAULT_HOST = "unix:///run/skiff/skiff.sock"
API = "/skiff.api.v1.ContainerService/"

# --- protobuf wire format (proto3) ------------------------------------------------------


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_bytes(field: int, value: bytes) -> bytes:
    """A length-delimited field; omitted when empty (proto3 default)."""
    return _varint(field << 3 | 2) + _varint(len(value)) + value if value else b""


def pb_msg(field: int, value: bytes, present: bool = False) -> bytes:
    """A sub-message field; ``present`` writes it even when empty (the field is set)."""
    if not value and not present:
        return b""
    return _varint(field << 3 | 2) + _varint(len(value)) + value


def pb_str(field: int, value: str) -> bytes:
    return pb_bytes(field, value.encode())


def pb_int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value) if value else b""


def pb_parse(data: bytes) -> dict[int, list[int | bytes]]:
    """Fields by number: varints as int, length-delimited as bytes (fixed widths skipped)."""
    out: dict[int, list[int | bytes]] = {}
    i, n = 0, len(data)
    while i < n:
        key, i = _read_varint(data, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _read_varint(data, i)
            out.setdefault(field, []).append(v)
        elif wire == 2:
            ln, i = _read_varint(data, i)
            out.setdefault(field, []).append(data[i:i + ln])
            i += ln
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"protobuf: wire type {wire}")
    return out


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _first(fields: dict[int, list[int | bytes]], n: int, default: int | bytes = b"") -> int | bytes:
    v = fields.get(n)
    return v[-1] if v else default


def _int32(v: int | bytes) -> int:
    assert isinstance(v, int)
    return v - (1 << 64) if v >= 1 << 63 else v


# --- HPACK (RFC 7541) ---------------------------------------------------------------------

STATIC = [
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"), (":path", "/index.html"),
    (":scheme", "http"), (":scheme", "https"), (":status", "200"), (":status", "204"), (":status", "206"),
    (":status", "304"), (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""), ("accept", ""),
    ("access-control-allow-origin", ""), ("age", ""), ("allow", ""), ("authorization", ""),
    ("cache-control", ""), ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""),
    ("content-length", ""), ("content-location", ""), ("content-range", ""), ("content-type", ""),
    ("cookie", ""), ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
    ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
    ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""), ("max-forwards", ""),
    ("proxy-authenticate", ""), ("proxy-authorization", ""), ("range", ""), ("referer", ""), ("refresh", ""),
    ("retry-after", ""), ("server", ""), ("set-cookie", ""), ("strict-transport-security", ""),
    ("transfer-encoding", ""), ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
]

#: Code length of each symbol (0-255, 256 = EOS) in the HPACK Huffman code (Appendix B).
#: The code is canonical: codes follow from the lengths, in order of (length, symbol).
_HUFFMAN_LENGTHS: dict[int, str] = {
    5: "48 49 50 97 99 101 105 111 115 116",
    6: "32 37 45 46 47 51 52 53 54 55 56 57 61 65 95 98 100 102 103 104 108 109 110 112 114 117",
    7: "58 66 67 68 69 70 71 72 73 74 75 76 77 78 79 80 81 82 83 84 85 86 87 89 106 107 113 118 119 120 121 122",
    8: "38 42 44 59 88 90",
    10: "33 34 40 41 63",
    11: "39 43 124",
    12: "35 62",
    13: "0 36 64 91 93 126",
    14: "94 125",
    15: "60 96 123",
    19: "92 195 208",
    20: "128 130 131 162 184 194 224 226",
    21: "153 161 167 172 176 177 179 209 216 217 227 229 230",
    22: "129 132 133 134 136 146 154 156 160 163 164 169 170 173 178 181 185 186 187 189 190 196 198 228 232 233",
    23: "1 135 137 138 139 140 141 143 147 149 150 151 152 155 157 158 165 166 168 174 175 180 182 183 188 191 197 "
        "231 239",
    24: "9 142 144 145 148 159 171 206 215 225 236 237",
    25: "199 207 234 235",
    26: "192 193 200 201 202 205 210 213 218 219 238 240 242 243 255",
    27: "203 204 211 212 214 221 222 223 241 244 245 246 247 248 250 251 252 253 254",
    28: "2 3 4 5 6 7 8 11 12 14 15 16 17 18 19 20 21 23 24 25 26 27 28 29 30 31 127 220 249",
    30: "10 13 22 256",
}


def huffman_codes() -> dict[int, tuple[int, int]]:
    """symbol -> (code, length), built canonically from the lengths."""
    codes: dict[int, tuple[int, int]] = {}
    code, prev = 0, 5
    for length in sorted(_HUFFMAN_LENGTHS):
        code <<= length - prev
        prev = length
        for sym in sorted(int(s) for s in _HUFFMAN_LENGTHS[length].split()):
            codes[sym] = (code, length)
            code += 1
    return codes


_DECODE: dict[tuple[int, int], int] | None = None


def huffman_decode(data: bytes) -> bytes:
    global _DECODE
    if _DECODE is None:
        _DECODE = {(c, n): s for s, (c, n) in huffman_codes().items()}
    out = bytearray()
    code = length = 0
    for byte in data:
        for shift in range(7, -1, -1):
            code = code << 1 | (byte >> shift) & 1
            length += 1
            sym = _DECODE.get((code, length))
            if sym is not None:
                if sym == 256:
                    raise ValueError("hpack: EOS in a string")
                out.append(sym)
                code = length = 0
            elif length > 30:
                raise ValueError("hpack: bad Huffman code")
    if length > 7 or code != (1 << length) - 1:  # padding: the most significant bits of EOS, < 8 bits
        raise ValueError("hpack: bad Huffman padding")
    return bytes(out)


def huffman_encode(data: bytes) -> bytes:
    """For tests (and symmetry); the client itself sends raw strings."""
    codes = huffman_codes()
    acc = bits = 0
    out = bytearray()
    for b in data:
        c, n = codes[b]
        acc = acc << n | c
        bits += n
        while bits >= 8:
            bits -= 8
            out.append(acc >> bits & 0xFF)
    if bits:
        out.append((acc << (8 - bits) | (1 << (8 - bits)) - 1) & 0xFF)
    return bytes(out)


def _hp_int(data: bytes, i: int, prefix: int) -> tuple[int, int]:
    mask = (1 << prefix) - 1
    v = data[i] & mask
    i += 1
    if v < mask:
        return v, i
    shift = 0
    while True:
        b = data[i]
        i += 1
        v += (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, i


def _hp_enc_int(v: int, prefix: int, flags: int) -> bytes:
    mask = (1 << prefix) - 1
    if v < mask:
        return bytes([flags | v])
    out = bytearray([flags | mask])
    v -= mask
    while v >= 0x80:
        out.append(v & 0x7F | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


class Decoder:
    """HPACK header block decoder with its dynamic table."""

    def __init__(self, max_size: int = 4096):
        self.table: list[tuple[str, str]] = []
        self.size = 0
        self.max_size = max_size

    def _get(self, index: int) -> tuple[str, str]:
        if 1 <= index <= len(STATIC):
            return STATIC[index - 1]
        j = index - len(STATIC) - 1
        if 0 <= j < len(self.table):
            return self.table[j]
        raise ValueError(f"hpack: index {index}")

    def _add(self, name: str, value: str) -> None:
        self.table.insert(0, (name, value))
        self.size += len(name) + len(value) + 32
        self._evict()

    def _evict(self) -> None:
        while self.size > self.max_size and self.table:
            n, v = self.table.pop()
            self.size -= len(n) + len(v) + 32

    def _string(self, data: bytes, i: int) -> tuple[str, int]:
        huff = data[i] & 0x80
        n, i = _hp_int(data, i, 7)
        raw = data[i:i + n]
        return (huffman_decode(raw) if huff else raw).decode("latin-1"), i + n

    def decode(self, data: bytes) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        i = 0
        while i < len(data):
            b = data[i]
            if b & 0x80:  # indexed
                idx, i = _hp_int(data, i, 7)
                out.append(self._get(idx))
                continue
            if b & 0xE0 == 0x20:  # dynamic table size update
                self.max_size, i = _hp_int(data, i, 5)
                self._evict()
                continue
            prefix, index = (6, True) if b & 0xC0 == 0x40 else (4, False)
            idx, i = _hp_int(data, i, prefix)
            if idx:
                name = self._get(idx)[0]
            else:
                name, i = self._string(data, i)
            value, i = self._string(data, i)
            if index:
                self._add(name, value)
            out.append((name, value))
        return out


def encode_headers(headers: list[tuple[str, str]]) -> bytes:
    """Literal fields without indexing (raw strings), static-table names where there is one."""
    out = bytearray()
    names = {n: i + 1 for i, (n, _) in reversed(list(enumerate(STATIC)))}
    full = {hv: i + 1 for i, hv in enumerate(STATIC)}
    for name, value in headers:
        if (name, value) in full:
            out += _hp_enc_int(full[(name, value)], 7, 0x80)
            continue
        idx = names.get(name, 0)
        out += _hp_enc_int(idx, 4, 0x00)
        if not idx:
            out += _hp_enc_int(len(name), 7, 0) + name.encode()
        v = value.encode("latin-1")
        out += _hp_enc_int(len(v), 7, 0) + v
    return bytes(out)


# --- HTTP/2 (RFC 7540) --------------------------------------------------------------------

DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
WINDOW = 1 << 24


class RpcError(Exception):
    def __init__(self, status: int, message: str, reason: str = ""):
        super().__init__(message)
        self.status, self.message, self.reason = status, message, reason


class Unreachable(Exception):
    pass


class Stream:
    def __init__(self, sid: int):
        self.id = sid
        self.headers: list[tuple[str, str]] | None = None
        self.trailers: list[tuple[str, str]] | None = None
        self.buf = bytearray()
        self.messages: list[bytes] = []
        self.closed = False

    def take(self) -> None:
        while len(self.buf) >= 5:
            n = struct.unpack(">I", self.buf[1:5])[0]
            if len(self.buf) < 5 + n:
                return
            self.messages.append(bytes(self.buf[5:5 + n]))
            del self.buf[:5 + n]

    def status(self) -> None:
        """Raise the call's error from its trailers (or trailers-only headers)."""
        md = dict(self.trailers or self.headers or [])
        code = int(md.get("grpc-status", "2"))
        if code == 0:
            return
        message = _percent_decode(md.get("grpc-message", ""))
        reason = ""
        details = md.get("grpc-status-details-bin")
        if details:
            reason = _error_reason(details)
        raise RpcError(code, message, reason)


def _percent_decode(s: str) -> str:
    """grpc-message is percent-encoded UTF-8."""
    raw = s.encode("latin-1")
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == 0x25 and i + 3 <= len(raw):
            try:
                out.append(int(raw[i + 1:i + 3], 16))
                i += 3
                continue
            except ValueError:
                pass
        out.append(raw[i])
        i += 1
    return out.decode(errors="replace")


def _error_reason(b64: str) -> str:
    """The ErrorInfo reason in a google.rpc.Status (details: Any{type_url, value})."""
    import binascii

    try:
        status = pb_parse(binascii.a2b_base64(b64 + "=" * (-len(b64) % 4)))
        for any_ in status.get(3, []):
            assert isinstance(any_, bytes)
            f = pb_parse(any_)
            if bytes(_first(f, 1)).endswith(b"google.rpc.ErrorInfo"):
                return bytes(_first(pb_parse(bytes(_first(f, 2))), 1)).decode()
    except (ValueError, binascii.Error, AssertionError, IndexError):
        pass
    return ""


class Connection:
    """One HTTP/2 connection to the gateway's unix socket; single-threaded."""

    def __init__(self, path: str):
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        try:
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            raise Unreachable(str(e)) from None
        self.decoder = Decoder()
        self.streams: dict[int, Stream] = {}
        self.next_id = 1
        self.rbuf = bytearray()
        self.peer_window = 65535
        self.peer_max_frame = 16384
        self.wake_fd = -1  # a pipe fed by signal.set_wakeup_fd
        self.on_wake: object = None  # called when wake_fd is readable
        settings = struct.pack(">HIHI", 0x2, 0, 0x4, WINDOW)  # ENABLE_PUSH=0, INITIAL_WINDOW_SIZE
        self.sock.sendall(PREFACE + self._frame(SETTINGS, 0, 0, settings)
                          + self._frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", WINDOW - 65535)))

    @staticmethod
    def _frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", sid) + payload

    def call(self, method: str, message: bytes, timeout: str = "60S", metadata: tuple[tuple[str, str], ...] = ()
             ) -> Stream:
        """Open a stream and send one request message (and half-close)."""
        sid = self.next_id
        self.next_id += 2
        st = self.streams[sid] = Stream(sid)
        headers = [(":method", "POST"), (":scheme", "http"), (":path", API + method), (":authority", "localhost"),
                   ("content-type", "application/grpc"), ("te", "trailers"), ("user-agent", "skiff-lean/1")]
        if timeout:
            headers.append(("grpc-timeout", timeout))
        headers += list(metadata)
        body = b"\0" + struct.pack(">I", len(message)) + message
        out = self._frame(HEADERS, END_HEADERS, sid, encode_headers(headers))
        # Our messages are small: one DATA frame, within the initial windows.
        if len(body) > min(self.peer_max_frame, self.peer_window):
            raise ValueError("request too large for the lean client")
        self.peer_window -= len(body)
        out += self._frame(DATA, END_STREAM, sid, body)
        self.sock.sendall(out)
        return st

    def unary(self, method: str, message: bytes, metadata: tuple[tuple[str, str], ...] = (),
              timeout: str = "60S") -> bytes:
        st = self.call(method, message, timeout=timeout, metadata=metadata)
        self.pump(lambda: st.closed)
        st.status()
        if not st.messages:
            raise RpcError(13, "no response message")
        return st.messages[0]

    def pump(self, done: object) -> None:
        """Read and handle frames until ``done()``."""
        while not done():  # type: ignore[operator]
            self._read_frame()

    def _recv(self, n: int) -> bytes:
        while len(self.rbuf) < n:
            if self.wake_fd >= 0:
                import select

                sock_fd = self.sock.fileno()
                ready, _, _ = select.select([sock_fd, self.wake_fd], [], [])
                if self.wake_fd in ready and self.on_wake is not None:
                    self.on_wake()  # type: ignore[operator]
                if sock_fd not in ready:
                    continue
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Unreachable("the connection was closed")
            self.rbuf += chunk
        out = bytes(self.rbuf[:n])
        del self.rbuf[:n]
        return out

    def _read_frame(self) -> None:
        head = self._recv(9)
        length = int.from_bytes(head[:3], "big")
        kind, flags = head[3], head[4]
        sid = struct.unpack(">I", head[5:9])[0] & 0x7FFFFFFF
        payload = self._recv(length) if length else b""
        if kind in (DATA, HEADERS) and flags & PADDED:
            pad = payload[0]
            payload = payload[1:len(payload) - pad]
        if kind == DATA:
            st = self.streams.get(sid)
            if length:
                # Give the window back at once: output is written out as it comes.
                upd = struct.pack(">I", length)
                self.sock.sendall(self._frame(WINDOW_UPDATE, 0, 0, upd)
                                  + (self._frame(WINDOW_UPDATE, 0, sid, upd) if not flags & END_STREAM else b""))
            if st is not None:
                st.buf += payload
                st.take()
                if flags & END_STREAM:
                    st.closed = True
        elif kind == HEADERS:
            if flags & PRIORITY:
                payload = payload[5:]
            block = payload
            while not flags & END_HEADERS:
                head = self._recv(9)
                n = int.from_bytes(head[:3], "big")
                flags = head[4] | (flags & END_STREAM)
                block += self._recv(n)
            headers = self.decoder.decode(block)
            st = self.streams.get(sid)
            if st is not None:
                if st.headers is None:
                    st.headers = headers
                else:
                    st.trailers = headers
                if flags & END_STREAM:
                    st.closed = True
        elif kind == SETTINGS:
            if not flags & ACK:
                for k in range(0, len(payload) - 5, 6):
                    ident, value = struct.unpack(">HI", payload[k:k + 6])
                    if ident == 0x5:
                        self.peer_max_frame = value
                    elif ident == 0x4:
                        self.peer_window += 0  # per-stream windows: our requests are tiny
                self.sock.sendall(self._frame(SETTINGS, ACK, 0, b""))
        elif kind == PING:
            if not flags & ACK:
                self.sock.sendall(self._frame(PING, ACK, 0, payload))
        elif kind == WINDOW_UPDATE:
            if sid == 0:
                self.peer_window += struct.unpack(">I", payload)[0] & 0x7FFFFFFF
        elif kind == RST_STREAM:
            st = self.streams.get(sid)
            if st is not None:
                st.closed = True
                if st.trailers is None:
                    st.trailers = [("grpc-status", "14"), ("grpc-message", "stream reset by the gateway")]
        elif kind == GOAWAY:
            last = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
            for st in self.streams.values():
                if st.id > last and not st.closed:
                    st.closed = True
                    st.trailers = [("grpc-status", "14"), ("grpc-message", "the gateway went away")]

    def close(self) -> None:
        try:
            self.sock.sendall(self._frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0)))
        except OSError:
            pass
        self.sock.close()


# --- the commands -----------------------------------------------------------------------

#: run flags without a value that this path understands, and those with one
_BOOL = {"--rm", "-d", "--detach"}
_VALUE = {"--network", "--net", "--name"}
_GLOBAL_VALUE = {"-H", "--host"}
PROXIED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")


def parse(argv: list[str], environ: dict[str, str]) -> dict[str, object] | None:
    """The options of a command this path handles (``verb``: run, create, start, wait, rm), or None."""
    host = environ.get("SKIFF_HOST") or DEFAULT_HOST
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        a = argv[i]
        name, eq, val = a.partition("=")
        if name in _GLOBAL_VALUE:
            if not eq:
                i += 1
                if i >= len(argv):
                    return None
                val = argv[i]
            host = val
        else:
            return None  # --debug, TLS flags, --log-level ...: the full CLI
        i += 1
    if i >= len(argv) or argv[i] not in VERBS or not host.startswith("unix://") or environ.get("SKIFF_TRACE"):
        return None
    verb = argv[i]
    i += 1
    if verb in ("start", "wait", "rm"):
        return _parse_refs(verb, host[len("unix://"):], argv[i:])
    if verb == "ps":
        return _parse_ps(host[len("unix://"):], argv[i:])
    opts: dict[str, object] = {"verb": verb, "host": host[len("unix://"):], "rm": False, "detach": False,
                               "network": "", "name": ""}
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "-":
        a = argv[i]
        if a == "--":
            i += 1
            break
        name, eq, val = a.partition("=")
        if name in _BOOL and not eq and not (verb == "create" and name != "--rm"):
            opts["rm" if name == "--rm" else "detach"] = True
        elif name in _VALUE:
            if not eq:
                i += 1
                if i >= len(argv):
                    return None
                val = argv[i]
            if not val:
                return None
            opts["name" if name == "--name" else "network"] = val
        else:
            return None
        i += 1
    if i >= len(argv) or not argv[i] or argv[i].startswith("-"):
        return None
    opts["image"] = argv[i]
    opts["command"] = argv[i + 1:]
    return opts


VERBS = ("run", "create", "start", "wait", "rm", "ps")


def _parse_refs(verb: str, host: str, rest: list[str]) -> dict[str, object] | None:
    """`start C`, `wait C...`, `rm [-f] C`: the cases whose failure leaves nothing half-done."""
    force = False
    refs: list[str] = []
    for a in rest:
        if verb == "rm" and a in ("-f", "--force") and not refs:
            force = True
        elif a.startswith("-") or not a:
            return None
        else:
            refs.append(a)
    if not refs or (verb == "start" and len(refs) > 1):
        return None  # several starts: a failure in the middle is the full CLI's to report
    return {"verb": verb, "host": host, "containers": refs, "force": force}


_PS_FLAGS = {"-a": "all", "--all": "all", "-q": "quiet", "--quiet": "quiet", "--no-trunc": "no_trunc"}


def _parse_ps(host: str, rest: list[str]) -> dict[str, object] | None:
    """`ps` with -a, -q, --no-trunc (short flags combined, as -aq); anything else: the full CLI."""
    opts: dict[str, object] = {"verb": "ps", "host": host, "all": False, "quiet": False, "no_trunc": False}
    for a in rest:
        if a in _PS_FLAGS:
            opts[_PS_FLAGS[a]] = True
        elif len(a) > 2 and a[0] == "-" and a[1] != "-" and all(f"-{c}" in ("-a", "-q") for c in a[1:]):
            for c in a[1:]:
                opts[_PS_FLAGS[f"-{c}"]] = True
        else:
            return None
    return opts


_STATUS = {1: "created", 2: "running", 3: "paused", 4: "restarting", 5: "exited", 6: "removing", 7: "dead"}


def _load_format() -> object:
    """cli/format.py (plain Python, importing nothing at load), loaded without the skiff
    package; its compiled form is cached beside it as for the full CLI."""
    import _frozen_importlib_external  # importlib's own loader, loaded already (importlib.util costs ~3 ms)

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "format.py")
    module = type(sys)("skiff_lean_format")
    module.__file__ = path
    _frozen_importlib_external.SourceFileLoader("skiff_lean_format", path).exec_module(module)
    return module


def _seconds(secs: int, nanos: int) -> float | None:
    """A google.protobuf.Timestamp as epoch seconds; None when unset (as the full CLI's _ts)."""
    if secs == 0 and nanos == 0:
        return None
    return secs + nanos / 1e9


def _timestamp(data: bytes, i: int, end: int) -> tuple[int, int]:
    """(seconds, nanos) of the Timestamp in ``data[i:end]`` (varints read inline: one per row)."""
    secs = nanos = 0
    while i < end:
        key = data[i]
        if key != 0x08 and key != 0x10:  # not seconds or nanos (varints): skip it
            key, i = _read_varint(data, i)
            i = _skip(data, i, key & 7)
            continue
        i += 1
        v = shift = 0
        while True:
            b = data[i]
            i += 1
            v |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
        if v >= 1 << 63:
            v -= 1 << 64
        if key == 0x08:
            secs = v
        else:
            nanos = v
    return secs, nanos


def _skip(data: bytes, i: int, wire: int) -> int:
    """Past the value of a field of wire type ``wire`` that starts at ``i``."""
    if wire == 0:
        return _read_varint(data, i)[1]
    if wire == 2:
        n, i = _read_varint(data, i)
        return i + n
    if wire == 1:
        return i + 8
    if wire == 5:
        return i + 4
    raise ValueError(f"protobuf: wire type {wire}")


#: What `ps` shows of one api.v1.Container, as _ps_containers gives it: created (seconds,
#: nanos), id, name, image, image_id, path, args, and the (start, end) in the response of
#: config, state and network_settings (decoded only when needed); links: any set.
PsRow = tuple[tuple[int, int], str, str, str, str, str, list[str], tuple[int, int], tuple[int, int],
              tuple[int, int], bool]


def _ps_containers(data: bytes) -> list[PsRow]:
    """The containers of a ListContainersResponse, decoded only as far as `ps` needs: the
    hot loop of `ps -a` over many containers (pb_parse would build a dict per message).
    Tags are compared whole: fields 1-15 of wire type 2 are one byte (field << 3 | 2)."""
    out: list[PsRow] = []
    i, n = 0, len(data)
    rv, skip = _read_varint, _skip
    none = (0, 0)
    while i < n:
        key, i = rv(data, i)
        if key != 0x0A:  # not field 1 (containers), length-delimited
            i = skip(data, i, key & 7)
            continue
        ln, i = rv(data, i)
        end = i + ln
        cid = name = image = image_id = path = ""
        args: list[str] = []
        created = config = state = settings = none
        links = False
        while i < end:
            key = data[i]
            if key < 0x80:
                i += 1
            else:
                key, i = rv(data, i)
            if key & 7 != 2:
                i = skip(data, i, key & 7)
                continue
            ln = data[i]
            if ln < 0x80:
                i += 1
            else:
                ln, i = rv(data, i)
            j = i + ln
            if key <= 0x2A:  # fields 1-5
                if key == 0x0A:
                    cid = data[i:j].decode()
                elif key == 0x12:
                    name = data[i:j].decode()
                elif key == 0x1A:
                    image = data[i:j].decode()
                elif key == 0x22:
                    image_id = data[i:j].decode()
                elif key == 0x2A:
                    created = _timestamp(data, i, j)
            elif key == 0x32:
                path = data[i:j].decode()
            elif key == 0x3A:
                args.append(data[i:j].decode())
            elif key == 0x42:
                config = (i, j)
            elif key == 0x52:
                state = (i, j)
            elif key == 0x5A:
                settings = (i, j)
            elif key == 0x62:
                links = True
            i = j
        out.append((created, cid, name, image, image_id, path, args, config, state, settings, links))
    return out


def _has_field(data: bytes, span: tuple[int, int], field: int) -> bool:
    """Whether the message at ``span`` of ``data`` sets ``field``."""
    i, end = span
    while i < end:
        key, i = _read_varint(data, i)
        if key >> 3 == field:
            return True
        i = _skip(data, i, key & 7)
    return False


def _state(data: bytes, span: tuple[int, int]) -> tuple[int, int, tuple[int, int], tuple[int, int], bool]:
    """ContainerState: (status, exit_code, started_at, finished_at, has health)."""
    status = code = 0
    started = finished = (0, 0)
    health = False
    i, end = span
    while i < end:
        key, i = _read_varint(data, i)
        f, wire = key >> 3, key & 7
        if wire == 0 and f in (1, 3):
            v, i = _read_varint(data, i)
            if f == 1:
                status = v
            else:
                code = _int32(v)
        elif wire == 2 and f in (4, 5, 8):
            ln, i = _read_varint(data, i)
            if f == 4:
                started = _timestamp(data, i, i + ln)
            elif f == 5:
                finished = _timestamp(data, i, i + ln)
            else:
                health = True
            i += ln
        else:
            i = _skip(data, i, wire)
    return status, code, started, finished, health


def ps(opts: dict[str, object], conn: Connection) -> int | None:
    """The full CLI's `ps` output, byte for byte; None (nothing printed) for what it does not
    render itself: links (extra names), health, published or exposed ports of a running container."""
    import time

    try:
        data = conn.unary("ListContainers", pb_int(1, 1 if opts["all"] else 0))
    except RpcError:
        return None
    found = _ps_containers(data)
    found.sort(key=lambda r: r[0], reverse=True)  # by created; stable, as the full CLI's sorted()
    no_trunc = bool(opts["no_trunc"])
    if opts["quiet"]:
        out = "".join(f"{r[1] if no_trunc else _short(r[1])}\n" for r in found)
        sys.stdout.write(out)
        sys.stdout.flush()
        return 0
    if any(r[10] for r in found):
        return None  # links: NAMES shows parent/alias
    fmt = _load_format()
    ellipsis, go_quote = fmt.ellipsis, fmt.go_quote  # type: ignore[attr-defined]
    ago, container_status = fmt.ago, fmt.container_status  # type: ignore[attr-defined]
    now = time.time()
    rows = []
    quoted: dict[str, str] = {}  # the COMMAND cell of each command seen (many containers share one)
    for created, cid, name, image, image_id, path, args, config, state, settings, _ in found:
        status_no, exit_code, started, finished, health = _state(data, state)
        status = _STATUS.get(status_no, "created")
        if status in ("running", "paused") and (health or _has_field(data, settings, 8)
                                                or _has_field(data, config, 11)):
            return None  # health or PORTS
        # as the full CLI's command_of: the path and its arguments joined by spaces
        command = " ".join([path, *args]) if args else path
        cell = quoted.get(command)
        if cell is None:
            cell = quoted[command] = go_quote(command if no_trunc else ellipsis(command, 20))
        image = image or image_id
        if not no_trunc and image.startswith("sha256:"):
            image = _short(image)
        made = _seconds(*created)
        text = container_status(status, exit_code, _seconds(*started), _seconds(*finished), now)
        rows.append([cid if no_trunc else _short(cid), image, cell,
                     ago(made, now) if made is not None else "", text, "", name.lstrip("/")])
    header = ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
    sys.stdout.write(fmt.table(header, rows))  # type: ignore[attr-defined]
    sys.stdout.flush()
    return 0


def _short(ident: str) -> str:
    """As format.short_id: drop ``sha256:``, keep 12 digits."""
    return (ident.split(":", 1)[1] if ":" in ident else ident)[:12]


#: The most bytes of container references in one RemoveContainers request (one DATA frame).
_RM_BATCH_BYTES = 12000


def rm_batch(opts: dict[str, object], conn: Connection) -> int | None:
    """`rm C1 C2 ...` with RemoveContainers: the references in a few calls (sent at once),
    one result per reference, printed in order as the full CLI does; exit 1 if any failed.
    None when the gateway has no RemoveContainers (nothing was done): remove one by one."""
    refs = list(opts["containers"])  # type: ignore[call-overload]
    force = pb_int(2, 1 if opts["force"] else 0)
    chunks: list[list[str]] = [[]]
    size = 0
    for ref in refs:
        n = len(ref.encode()) + 3
        if chunks[-1] and size + n > _RM_BATCH_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(ref)
        size += n
    streams: list[Stream] = []
    for chunk in chunks:
        body = b"".join(pb_str(1, r) for r in chunk) + force
        while conn.peer_window < len(body) + 5:
            conn._read_frame()
        streams.append(conn.call("RemoveContainers", body, timeout="300S"))
    failed = False
    for i, (chunk, st) in enumerate(zip(chunks, streams, strict=True)):
        conn.pump(lambda st=st: st.closed)  # type: ignore[misc]
        try:
            st.status()
            if not st.messages:
                raise RpcError(13, "no response message")
        except RpcError as e:
            if e.status == 12 and i == 0:  # UNIMPLEMENTED: an older gateway (all chunks alike)
                for other in streams[1:]:
                    conn.pump(lambda other=other: other.closed)  # type: ignore[misc]
                return None
            sys.stdout.flush()
            for _ in chunk:
                print(f"Error response from daemon: {e.message}", file=sys.stderr, flush=True)
            failed = True
            continue
        results = pb_parse(st.messages[0]).get(1, [])
        if len(results) != len(chunk):
            raise ValueError(f"{len(results)} results for {len(chunk)} containers")
        out: list[str] = []
        for ref, raw in zip(chunk, results, strict=True):
            r = pb_parse(bytes(raw))  # type: ignore[arg-type]
            if _first(r, 3, 0):
                if out:
                    sys.stdout.write("".join(out))
                    sys.stdout.flush()
                    out = []
                print(f"Error response from daemon: {bytes(_first(r, 4)).decode()}", file=sys.stderr, flush=True)
                failed = True
            else:
                out.append(ref + "\n")
        sys.stdout.write("".join(out))
        sys.stdout.flush()
    return 1 if failed else 0


def rm_many(opts: dict[str, object], conn: Connection) -> int:
    """`rm C1 C2 ...`: removed concurrently (up to 50 calls in flight on the one connection,
    as Docker's CLI); each name printed in order once removed, each failure as the full
    CLI reports it; exit 1 if any failed."""
    refs = list(opts["containers"])  # type: ignore[call-overload]
    force = pb_int(2, 1 if opts["force"] else 0)
    streams: list[Stream] = []
    for ref in refs:
        while conn.peer_window < 4096 or sum(1 for s in streams if not s.closed) >= 50:
            conn._read_frame()
        streams.append(conn.call("RemoveContainer", pb_str(1, ref) + force, timeout="90S"))
    failed = False
    for ref, st in zip(refs, streams, strict=True):
        conn.pump(lambda st=st: st.closed)  # type: ignore[misc]
        try:
            st.status()
        except RpcError as e:
            sys.stdout.flush()
            print(f"Error response from daemon: {e.message}", file=sys.stderr, flush=True)
            failed = True
            continue
        print(ref, flush=True)
    return 1 if failed else 0


def simple(opts: dict[str, object], conn: Connection) -> int | None:
    """start, wait, rm: print what the full CLI prints; None on any error (nothing was done:
    the full CLI does it again and reports the error its way)."""
    refs = list(opts["containers"])  # type: ignore[call-overload]
    out: list[str] = []
    try:
        for ref in refs:
            msg = pb_str(1, ref)
            if opts["verb"] == "start":
                conn.unary("StartContainer", msg)
                out.append(ref)
            elif opts["verb"] == "rm":
                conn.unary("RemoveContainer", msg + pb_int(2, 1 if opts["force"] else 0), timeout="90S")
                out.append(ref)
            else:
                waited = pb_parse(conn.unary("WaitContainer", msg + pb_int(2, 1), timeout=""))
                if _first(waited, 2):
                    return None  # the full CLI prints the error beside the code
                out.append(str(_int32(_first(waited, 1, 0))))
    except RpcError:
        return None
    print("\n".join(out))
    return 0


def create_request(opts: dict[str, object]) -> bytes:
    """CreateContainerRequest, byte for byte what the full CLI sends for these flags."""
    command = list(opts["command"])  # type: ignore[call-overload]
    cmd = b"".join(pb_str(1, c) if c else b"\x0a\x00" for c in command)
    config = pb_str(1, str(opts["image"])) + pb_msg(2, cmd, present=bool(command))
    # restart_policy (55) {name: "no"}: the full CLI's default --restart
    host = pb_str(1, str(opts["network"])) + pb_int(4, 1 if opts["rm"] else 0) + pb_msg(55, pb_str(1, "no"))
    return pb_str(1, str(opts["name"])) + pb_msg(2, config, present=True) + pb_msg(3, host, present=True)


def attach_request(cid: str, rm: bool) -> bytes:
    """AttachContainerRequest{options}, byte for byte what the full CLI sends for `run`: stdout,
    stderr, logs, await_start (7); start (8): the gateway starts the container once the stream is
    registered; await_removed (9, with --rm): the exit status comes once it is gone."""
    options = (pb_str(1, cid) + pb_int(3, 1) + pb_int(4, 1) + pb_int(5, 1) + pb_int(7, 1) + pb_int(8, 1)
               + pb_int(9, 1 if rm else 0))
    return pb_msg(1, options, present=True)


def _report(message: str) -> None:
    """As the full CLI reports a failed run (Docker's style)."""
    text = message if message.endswith(("?", ".")) else message + "."
    print(f"skiff: {text}\nSee 'skiff run --help'.", file=sys.stderr)


def run(opts: dict[str, object], conn: Connection) -> int | None:
    """None: the create failed, nothing happened, let the full CLI do it (and explain)."""
    try:
        resp = pb_parse(conn.unary("CreateContainer", create_request(opts)))
    except RpcError:
        return None
    cid = bytes(_first(resp, 1)).decode()
    for w in resp.get(2, []):
        print(f"WARNING: {bytes(w).decode()}", file=sys.stderr)  # type: ignore[arg-type]
    cid_msg = pb_str(1, cid)
    if opts["verb"] == "create":
        print(cid)
        return 0
    if opts["detach"]:
        if not _start(conn, cid_msg, bool(opts["rm"])):
            return _start_failed
        print(cid)
        return 0
    attach = conn.call("AttachContainer", attach_request(cid, bool(opts["rm"])), timeout="")
    conn.pump(lambda: attach.headers is not None or attach.closed)  # registered (and started)
    if attach.closed and attach.trailers is None:  # ended before its metadata: the start failed
        try:
            attach.status()
        except RpcError as e:
            _start_error(conn, cid_msg, bool(opts["rm"]), e)
            return _start_failed
    if ("skiff-attach-start", "1") not in (attach.headers or []) and not _start(conn, cid_msg, bool(opts["rm"])):
        return _start_failed  # a gateway that does not know options.start: as before
    code, removed = _follow(conn, attach, cid)
    if code is None:  # the stream ended early: ask
        waited = pb_parse(conn.unary("WaitContainer", cid_msg + pb_int(2, 1)))
        error = bytes(_first(waited, 2)).decode()
        if error:
            _report(f"Error response from daemon: {error}")
            return 125
        code = _int32(_first(waited, 1, 0))
    if opts["rm"] and not removed:
        try:
            conn.unary("WaitContainer", cid_msg + pb_int(2, 3))
        except RpcError as e:
            if e.status != 5:  # NOT_FOUND: gone already
                raise
    return code


_start_failed = 125


def _start(conn: Connection, cid_msg: bytes, remove_on_failure: bool) -> bool:
    try:
        conn.unary("StartContainer", cid_msg)
        return True
    except RpcError as e:
        _start_error(conn, cid_msg, remove_on_failure, e)
        return False


def _start_error(conn: Connection, cid_msg: bytes, remove_on_failure: bool, e: RpcError) -> None:
    global _start_failed
    if remove_on_failure:
        try:
            conn.unary("RemoveContainer", cid_msg + pb_int(2, 1))
        except (RpcError, Unreachable):
            pass
    _report(f"Error response from daemon: {e.message}")
    _start_failed = {"COMMAND_NOT_FOUND": 127, "COMMAND_NOT_EXECUTABLE": 126}.get(e.reason, 125)


def _follow(conn: Connection, attach: Stream, cid: str) -> tuple[int | None, bool]:
    """Copy the attach stream to stdout/stderr, forwarding our signals; the exit code, and
    whether the container was removed before it was sent."""
    names = {getattr(_signal, n): n for n in PROXIED}
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    previous = {}
    for name in PROXIED:
        sig = getattr(_signal, name)
        previous[sig] = _signal.signal(sig, lambda *_: None)
    old_fd = _signal.set_wakeup_fd(w, warn_on_full_buffer=False)

    def woke() -> None:
        """Forward as the full CLI does: KillContainer with the signal's name. Only sent here
        (between frames we read); its answer is read with the rest and not waited for."""
        try:
            data = os.read(r, 64)
        except BlockingIOError:
            return
        for b in data:
            conn.call("KillContainer", pb_str(1, cid) + pb_str(2, names.get(b, str(b))), timeout="30S")

    conn.wake_fd, conn.on_wake = r, woke
    out, err = sys.stdout.buffer, sys.stderr.buffer
    try:
        while True:
            while attach.messages:
                m = pb_parse(attach.messages.pop(0))
                if 1 in m:
                    entry = pb_parse(bytes(_first(m, 1)))
                    dest = err if _first(entry, 1, 0) == 2 else out
                    dest.write(bytes(_first(entry, 2)))
                    dest.flush()
                elif 2 in m:
                    status = pb_parse(bytes(_first(m, 2)))
                    return _int32(_first(status, 1, 0)), bool(_first(status, 3, 0))
            if attach.closed:
                attach.status()
                return None, False
            conn._read_frame()
    finally:
        _signal.set_wakeup_fd(old_fd)
        for sig, old in previous.items():
            _signal.signal(sig, old)
        conn.wake_fd, conn.on_wake = -1, None
        os.close(r)
        os.close(w)


def main(argv: list[str], environ: dict[str, str]) -> int | None:
    """The exit status, or None: run the full CLI instead."""
    opts = parse(argv, environ)
    if opts is None:
        return None
    try:
        conn = Connection(str(opts["host"]))
    except Unreachable:
        return None  # the full CLI says it the way it always does
    try:
        if opts["verb"] == "ps":
            return ps(opts, conn)
        if opts["verb"] == "rm" and len(opts["containers"]) > 1:  # type: ignore[arg-type]
            code = rm_batch(opts, conn)
            return rm_many(opts, conn) if code is None else code
        return run(opts, conn) if opts["verb"] in ("run", "create") else simple(opts, conn)
    except RpcError as e:
        _report(f"Error response from daemon: {e.message}")
        return 125
    except Unreachable:
        _report(f"Cannot connect to the skiff daemon at unix://{opts['host']}. Is the skiff daemon running?")
        return 125
    except (ValueError, struct.error, IndexError) as e:  # a protocol error: say it, as the full CLI would
        _report(f"Error response from daemon: malformed response: {e}")
        return 125
    except BrokenPipeError:
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        conn.close()
