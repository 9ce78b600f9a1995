"""The CLI's -p/--expose/--add-host parsing and the PORTS column (no daemon)."""

from __future__ import annotations

import pytest

from skiff.cli import exits
from skiff.cli import format as fmt
from skiff.cli.runopts import parse_publish


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("8080:80", ("", 8080, 80, "tcp")),
        ("127.0.0.1:8080:80/udp", ("127.0.0.1", 8080, 80, "udp")),
        ("127.0.0.1::80", ("127.0.0.1", 0, 80, "tcp")),
        ("80", ("", 0, 80, "tcp")),
        ("53/udp", ("", 0, 53, "udp")),
    ],
)
def test_parse_publish(text: str, want: tuple[str, int, int, str]) -> None:
    assert parse_publish(text) == want


@pytest.mark.parametrize("text", ["", "x:80", "80:0", "70000", "1.2.3:80:80", "80/sctp", "a:b:c:d"])
def test_parse_publish_refuses(text: str) -> None:
    with pytest.raises(exits.Usage):
        parse_publish(text)


def test_ports_column_like_docker() -> None:
    assert fmt.ports([("", 8080, 80, "tcp"), ("127.0.0.1", 5353, 53, "udp")], ["80/tcp", "443"]) == \
        "0.0.0.0:8080->80/tcp, 127.0.0.1:5353->53/udp, 443/tcp"
    assert fmt.ports([]) == ""


def test_dns_servers_must_be_ip_addresses() -> None:
    from skiff.cli.main import build_parser
    from skiff.cli.runopts import build_request

    parser = build_parser()
    req = build_request(parser.parse_args(["run", "--dns", "10.0.0.2", "--dns", "fd00::53", "busybox"]), {})
    assert list(req.host_config.dns) == ["10.0.0.2", "fd00::53"]
    with pytest.raises(exits.Usage, match=r'"dns\.example" for "--dns" flag: dns\.example is not an ip'):
        build_request(parser.parse_args(["run", "--dns", "dns.example", "busybox"]), {})
