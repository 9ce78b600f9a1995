"""Generated /etc/hosts and /etc/resolv.conf (pure functions)."""

from __future__ import annotations

from pathlib import Path

import pytest

from skiff.common.errors import InvalidArgument
from skiff.netsvc import etcfiles


def test_hosts_has_localhost_extra_hosts_then_own_name() -> None:
    text = etcfiles.hosts("web", "172.18.0.2", ["db:10.0.0.5", "gw:host-gateway"], "172.18.0.1")
    lines = text.splitlines()
    assert lines[0] == "127.0.0.1\tlocalhost" and "::1\tlocalhost ip6-localhost ip6-loopback" in lines
    assert lines[-3:] == ["10.0.0.5\tdb", "172.18.0.1\tgw", "172.18.0.2\tweb"]
    assert etcfiles.hosts("lonely").splitlines()[-1] == "127.0.0.1\tlonely"  # none mode
    with pytest.raises(InvalidArgument):
        etcfiles.hosts("x", extra_hosts=["gw:host-gateway"])  # no bridge, no gateway
    with pytest.raises(InvalidArgument):
        etcfiles.hosts("x", extra_hosts=["db:not-an-ip"])


def test_resolv_drops_loopback_and_ipv6_and_flags_override() -> None:
    host = "# comment\nnameserver 127.0.0.53\nnameserver 192.0.2.10\nnameserver 2001:db8::1\n" \
           "search corp.example\noptions edns0 trust-ad\n"
    assert etcfiles.resolv_conf(host) == "nameserver 192.0.2.10\nsearch corp.example\noptions edns0 trust-ad\n"
    only_local = "nameserver 127.0.0.1\n"
    assert etcfiles.resolv_conf(only_local) == "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
    out = etcfiles.resolv_conf(host, dns=["198.51.100.1"], dns_search=["a.example"], dns_options=["ndots:2"])
    assert out == "nameserver 198.51.100.1\nsearch a.example\noptions ndots:2\n"


def test_read_host_resolv_follows_systemd_resolved(tmp_path: Path) -> None:
    stub, upstream = tmp_path / "resolv.conf", tmp_path / "upstream.conf"
    stub.write_text("nameserver 127.0.0.53\n")
    upstream.write_text("nameserver 192.0.2.1\n")
    assert etcfiles.read_host_resolv(stub, upstream) == "nameserver 192.0.2.1\n"
    stub.write_text("nameserver 192.0.2.7\n")
    assert etcfiles.read_host_resolv(stub, upstream) == "nameserver 192.0.2.7\n"


def test_manager_attaches_etc_files_per_mode(tmp_path: Path) -> None:
    from skiff.netsvc.fake import FakeDriver
    from skiff.netsvc.manager import EndpointManager
    from skiff.netsvc.model import EndpointOptions
    from skiff.netsvc.store import EndpointStore

    m = EndpointManager([FakeDriver("none"), FakeDriver("host")], EndpointStore(tmp_path / "e.json"),
                        host_resolv=lambda: "nameserver 192.0.2.9\n", host_hosts=lambda: "HOSTS\n")
    none = m.create_endpoint("n", "none", EndpointOptions(hostname="box", dns_search=["x.example"]))
    assert none.hosts.endswith("127.0.0.1\tbox\n")
    assert none.resolv_conf == "nameserver 192.0.2.9\nsearch x.example\n"
    host = m.create_endpoint("h", "host", EndpointOptions(hostname="box"))
    assert (host.hosts, host.resolv_conf) == ("HOSTS\n", "nameserver 192.0.2.9\n")
    assert m.create_endpoint("bare", "none").hosts == ""  # no hostname: the image's files stay
    with pytest.raises(InvalidArgument):
        m.create_endpoint("bad", "none", EndpointOptions(hostname="b", extra_hosts=["nocolon"]))
    assert [e.container_id for e in m.list_endpoints()] == ["bare", "h", "n"]
