"""IPAM: subnet choice and allocations, persisted (no root, no kernel)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from skiff.common.errors import FailedPrecondition
from skiff.netsvc.ipam import Ipam, choose_subnet, parse_bip


def test_choose_subnet_skips_what_the_host_uses() -> None:
    used = [IPv4Network("0.0.0.0/0"), IPv4Network("172.17.0.0/16"), IPv4Network("172.18.5.0/24")]
    assert choose_subnet(used) == IPv4Network("172.19.0.0/16")
    with pytest.raises(FailedPrecondition):
        choose_subnet([IPv4Network("10.0.0.0/8")], [IPv4Network("10.1.0.0/24")])


def test_allocations_skip_gateway_and_persist_round_robin(tmp_path: Path) -> None:
    path = tmp_path / "ipam.json"
    ipam = Ipam(path)
    ipam.set_subnet(IPv4Network("10.9.0.0/29"))  # .1 gateway, .2-.6 usable, .7 broadcast
    assert ipam.gateway == IPv4Address("10.9.0.1")
    a = ipam.allocate("a")
    assert a == IPv4Address("10.9.0.2") and ipam.allocate("a") == a  # idempotent per container
    again = Ipam(path)  # a restart
    b = again.allocate("b")
    assert b == IPv4Address("10.9.0.3")
    again.release(str(a))
    assert again.allocate("c") == IPv4Address("10.9.0.4")  # not the address just released
    for cid in ("d", "e"):
        again.allocate(cid)
    assert again.allocate("f") == a  # wraps around to a free one
    with pytest.raises(FailedPrecondition, match="no free address"):
        again.allocate("g")


def test_reconcile_keeps_only_live_addresses_and_subnet_is_fixed_while_used(tmp_path: Path) -> None:
    ipam = Ipam(tmp_path / "ipam.json")
    ipam.set_subnet(parse_bip("172.30.0.1/16"))
    assert ipam.subnet == IPv4Network("172.30.0.0/16")
    ipam.allocate("a")
    ipam.allocate("b")
    with pytest.raises(FailedPrecondition):
        ipam.set_subnet(IPv4Network("10.0.0.0/24"))
    ipam.reconcile({"172.30.0.3": "b"})
    assert Ipam(tmp_path / "ipam.json").allocated == {"172.30.0.3": "b"}
