"""The container's /etc/hosts and /etc/resolv.conf, generated as Docker does.

Pure functions over text, so they are unit-tested without a host; the two
readers at the bottom are the only ones that touch the host's files.
"""

from __future__ import annotations

import functools
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from skiff.common.errors import InvalidArgument

HOST_GATEWAY = "host-gateway"
#: Docker's fallback when the host has no nameserver usable from a container.
FALLBACK_NAMESERVERS = ("8.8.8.8", "8.8.4.4")
SYSTEMD_RESOLVED_STUB = "127.0.0.53"
SYSTEMD_RESOLV_CONF = Path("/run/systemd/resolve/resolv.conf")

_LOCALHOST = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)


def parse_extra_host(item: str, gateway: str = "") -> tuple[str, str]:
    """``name:ip`` (``name:host-gateway`` → the bridge's gateway) → (name, ip)."""
    name, sep, ip = item.partition(":")
    if not sep or not name or not ip:
        raise InvalidArgument(f"invalid extra host {item!r}: want name:ip", reason="INVALID_EXTRA_HOST")
    if ip == HOST_GATEWAY:
        if not gateway:
            raise InvalidArgument(f"{item!r}: host-gateway needs a bridge network", reason="INVALID_EXTRA_HOST")
        ip = gateway
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise InvalidArgument(f"invalid IP address in extra host {item!r}", reason="INVALID_EXTRA_HOST") from None
    return name, ip


def hosts(hostname: str, ip: str = "", extra_hosts: Sequence[str] = (), gateway: str = "") -> str:
    """Localhost lines, extra hosts, then the container's own name on its address (Docker's order).

    Without an address (``none``) the hostname goes on 127.0.0.1, so that it resolves.
    """
    lines = [_LOCALHOST]
    for item in extra_hosts:
        name, addr = parse_extra_host(item, gateway)
        lines.append(f"{addr}\t{name}\n")
    if hostname:
        lines.append(f"{ip or '127.0.0.1'}\t{hostname}\n")
    return "".join(lines)


def _is_loopback(ns: str) -> bool:
    try:
        return ipaddress.ip_address(ns).is_loopback
    except ValueError:
        return True  # unparsable: unusable too


def parse_resolv(text: str) -> tuple[list[str], list[str], list[str]]:
    """(nameservers, search domains, options) of a resolv.conf; the last search/options line wins."""
    nameservers: list[str] = []
    search: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if not fields:
            continue
        if fields[0] == "nameserver" and len(fields) > 1:
            nameservers.append(fields[1])
        elif fields[0] in ("search", "domain"):
            search = fields[1:]
        elif fields[0] == "options":
            options = fields[1:]
    return nameservers, search, options


def resolv_conf(host_text: str, dns: Sequence[str] = (), dns_search: Sequence[str] = (),
                dns_options: Sequence[str] = ()) -> str:
    """The host's resolv.conf minus nameservers a container cannot reach; flags override each part.

    Remembered for the last few arguments (the same for most containers of a host).
    """
    return _resolv_conf(host_text, tuple(dns), tuple(dns_search), tuple(dns_options))


@functools.lru_cache(maxsize=32)
def _resolv_conf(host_text: str, dns: tuple[str, ...], dns_search: tuple[str, ...],
                 dns_options: tuple[str, ...]) -> str:
    """:func:`resolv_conf`, computed.

    Loopback nameservers (a local stub) and IPv6 ones (the bridge is IPv4 only) are
    dropped; with none left, Docker's fallback (Google's public DNS) is written.
    """
    nameservers, search, options = parse_resolv(host_text)
    if dns:
        nameservers = list(dns)
    else:
        nameservers = [ns for ns in nameservers if not _is_loopback(ns) and ":" not in ns]
        if not nameservers:
            nameservers = list(FALLBACK_NAMESERVERS)
    if dns_search:
        search = [] if list(dns_search) == ["."] else list(dns_search)
    if dns_options:
        options = list(dns_options)
    out = [f"nameserver {ns}\n" for ns in nameservers]
    if search:
        out.append(f"search {' '.join(search)}\n")
    if options:
        out.append(f"options {' '.join(options)}\n")
    return "".join(out)


#: Host files read before, by path: (what stat said, the text). Every endpoint reads them.
_read_cache: dict[Path, tuple[tuple[int, ...], str]] = {}


def _read(path: Path) -> str:
    """``path.read_text()``, from memory while a stat says the file is unchanged (one stat
    instead of an open and a read on every endpoint's create). OSError as the read."""
    st = os.stat(path)
    sig = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    hit = _read_cache.get(path)
    if hit is not None and hit[0] == sig:
        return hit[1]
    text = path.read_text()
    _read_cache[path] = (sig, text)
    return text


def read_host_resolv(path: Path = Path("/etc/resolv.conf"), systemd: Path = SYSTEMD_RESOLV_CONF) -> str:
    """The host's resolv.conf; behind systemd-resolved's stub, the upstream one it lists."""
    try:
        text = _read(path)
    except OSError:
        return ""
    if SYSTEMD_RESOLVED_STUB in parse_resolv(text)[0]:
        try:
            return _read(systemd)
        except OSError:
            pass
    return text


def read_host_hosts(path: Path = Path("/etc/hosts")) -> str:
    try:
        return _read(path)
    except OSError:
        return _LOCALHOST


def embedded_resolv_conf(host_text: str, dns_search: Sequence[str] = (), dns_options: Sequence[str] = ()) -> str:
    """A user network's resolv.conf: the embedded DNS (127.0.0.11) and the host's search and options.

    ``ndots:0`` (as Docker) makes a short name be asked as it is first, so the
    embedded DNS answers it before any search domain is tried upstream.
    """
    _, search, options = parse_resolv(host_text)
    if dns_search:
        search = [] if list(dns_search) == ["."] else list(dns_search)
    options = list(dns_options) if dns_options else [o for o in options if not o.startswith("ndots:")] + ["ndots:0"]
    out = ["nameserver 127.0.0.11\n"]
    if search:
        out.append(f"search {' '.join(search)}\n")
    out.append(f"options {' '.join(options)}\n")
    return "".join(out)
