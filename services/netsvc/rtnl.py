"""The few kernel requests on the path of every bridge endpoint, without pyroute2.

pyroute2 costs ~0.7 ms to open an ``IPRoute`` and 1-3 ms per request (message
classes, a dump for each ``link_lookup``, an asyncio loop underneath); the
requests here are a few hundred bytes each, encoded by hand:

- :func:`add_veth`: one ``RTM_NEWLINK`` makes the pair, puts the host end on the
  bridge and brings it up, the peer created directly in the container's
  namespace with its name and MAC;
- :func:`del_link`: one ``RTM_DELLINK`` by name (no lookup);
- :func:`configure`: the container's address, netmask and default route, set with
  ``ioctl``\\ s on a socket that belongs to its namespace (``netns.create`` hands one
  back), so no thread has to ``setns()`` into it and no netlink socket is opened
  there.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
from ipaddress import IPv4Address

NETLINK_ROUTE = 0
RTM_NEWLINK = 16
RTM_DELLINK = 17
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLA_F_NESTED = 0x8000
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MASTER = 10
IFLA_LINKINFO = 18
IFLA_NET_NS_FD = 28
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
IFF_UP = 0x1

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFADDR = 0x8916
SIOCSIFNETMASK = 0x891C
SIOCADDRT = 0x890B
RTF_UP = 0x1
RTF_GATEWAY = 0x2


def _attr(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * (-n % 4)


def _ifinfo(flags: int = 0, change: int = 0) -> bytes:
    return struct.pack("=BxHiII", socket.AF_UNSPEC, 0, 0, flags, change)


def _name(name: str) -> bytes:
    return name.encode() + b"\0"


def _request(kind: int, flags: int, body: bytes) -> None:
    """Send one request and wait for its acknowledgement; OSError(errno) if the kernel refuses."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE) as s:
        s.bind((0, 0))
        msg = struct.pack("=IHHII", 16 + len(body), kind, flags | NLM_F_REQUEST | NLM_F_ACK, 1, 0) + body
        s.send(msg)
        while True:
            data = s.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, mtype, _, seq, _ = struct.unpack_from("=IHHII", data, off)
                if mtype == NLMSG_ERROR and seq == 1:
                    code = -struct.unpack_from("=i", data, off + 16)[0]
                    if code:
                        raise OSError(code, os.strerror(code))
                    return
                off += (length + 3) & ~3 if length else len(data)


def add_veth(host: str, master: int, peer: str, peer_netns_fd: int, peer_mac: str) -> None:
    """A veth pair, host end ``host`` on bridge index ``master`` and up, peer ``peer`` in the
    namespace ``peer_netns_fd`` with MAC ``peer_mac`` (down: the kernel refuses to open a veth
    before its pair is complete; :func:`configure` brings it up). One request."""
    mac = bytes(int(b, 16) for b in peer_mac.split(":"))
    peer_msg = _ifinfo() + _attr(IFLA_IFNAME, _name(peer)) + _attr(IFLA_ADDRESS, mac) \
        + _attr(IFLA_NET_NS_FD, struct.pack("=I", peer_netns_fd))
    info = _attr(IFLA_INFO_KIND, b"veth\0") + _attr(IFLA_INFO_DATA | NLA_F_NESTED, _attr(VETH_INFO_PEER, peer_msg))
    body = _ifinfo(IFF_UP, IFF_UP) + _attr(IFLA_IFNAME, _name(host)) + _attr(IFLA_MASTER, struct.pack("=I", master)) \
        + _attr(IFLA_LINKINFO | NLA_F_NESTED, info)
    _request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body)


def del_link(name: str) -> bool:
    """Delete the interface ``name`` (a veth: both ends); False if there is none. Waits for the
    kernel to let go of it (synchronize_net: ~10-30 ms)."""
    try:
        _request(RTM_DELLINK, 0, _ifinfo() + _attr(IFLA_IFNAME, _name(name)))
    except OSError as err:
        if err.errno == errno.ENODEV:
            return False
        raise
    return True


_IFREQ_FLAGS = "16sH22x"
_IFREQ_ADDR = "16sH2s4s8x8x"  # name, then a sockaddr_in in the 24-byte union


class _Sockaddr(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("data", ctypes.c_ubyte * 14)]


class _RtEntry(ctypes.Structure):
    """struct rtentry (<net/route.h>), laid out by ctypes for this ABI."""

    _fields_ = [("pad1", ctypes.c_ulong), ("dst", _Sockaddr), ("gateway", _Sockaddr), ("genmask", _Sockaddr),
                ("flags", ctypes.c_ushort), ("pad2", ctypes.c_short), ("pad3", ctypes.c_ulong),
                ("pad4", ctypes.c_void_p), ("metric", ctypes.c_short), ("dev", ctypes.c_char_p),
                ("mtu", ctypes.c_ulong), ("window", ctypes.c_ulong), ("irtt", ctypes.c_ushort)]


def _sin(addr: IPv4Address) -> _Sockaddr:
    return _Sockaddr.from_buffer_copy(struct.pack("=H2s4s8x", socket.AF_INET, b"", addr.packed))


def _ifreq_addr(ifname: str, addr: IPv4Address) -> bytes:
    return struct.pack(_IFREQ_ADDR, ifname.encode(), socket.AF_INET, b"\0\0", addr.packed)


def configure(sock: socket.socket, ifname: str, ip: IPv4Address, prefixlen: int, gateway: IPv4Address | None) -> None:
    """In the namespace ``sock`` belongs to: ``ip/prefixlen`` on ``ifname`` (up), and a default
    route via ``gateway`` (None: no default route)."""
    fd = sock.fileno()
    fcntl.ioctl(fd, SIOCSIFADDR, _ifreq_addr(ifname, ip))
    mask = IPv4Address((0xFFFFFFFF << (32 - prefixlen)) & 0xFFFFFFFF)
    fcntl.ioctl(fd, SIOCSIFNETMASK, _ifreq_addr(ifname, mask))
    flags = struct.unpack(_IFREQ_FLAGS, fcntl.ioctl(fd, SIOCGIFFLAGS, struct.pack(_IFREQ_FLAGS, ifname.encode(), 0)))[1]
    if not flags & IFF_UP:
        fcntl.ioctl(fd, SIOCSIFFLAGS, struct.pack(_IFREQ_FLAGS, ifname.encode(), flags | IFF_UP))
    if gateway is not None:
        rt = _RtEntry()
        rt.dst = _sin(IPv4Address(0))
        rt.genmask = _sin(IPv4Address(0))
        rt.gateway = _sin(gateway)
        rt.flags = RTF_UP | RTF_GATEWAY
        fcntl.ioctl(fd, SIOCADDRT, bytes(rt))
