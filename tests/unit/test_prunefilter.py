"""Docker's prune filters (until, label, label!) as image, network and volume prune take them."""

from __future__ import annotations

import datetime

import pytest

from skiff.common import errors, prunefilter
from skiff.graphsvc.graph import Graph

NOW = 1_700_000_000 * 10**9


def test_until_forms() -> None:
    assert prunefilter.parse_time("1600000000", NOW) == 1_600_000_000 * 10**9
    assert prunefilter.parse_time("1600000000.5", NOW) == 1_600_000_000 * 10**9 + 500_000_000
    assert prunefilter.parse_time("10m", NOW) == NOW - 600 * 10**9
    assert prunefilter.parse_time("1h30m", NOW) == NOW - 5400 * 10**9
    assert prunefilter.parse_time("2020-01-02T03:04:05Z", NOW) == int(
        datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=datetime.UTC).timestamp()) * 10**9
    assert prunefilter.parse_time("2020-01-02T03:04:05+02:00", NOW) == int(
        datetime.datetime(2020, 1, 2, 1, 4, 5, tzinfo=datetime.UTC).timestamp()) * 10**9
    assert prunefilter.parse_time("2020-01-02", NOW) == int(datetime.datetime(2020, 1, 2).timestamp()) * 10**9
    for bad in ("yesterday", "10x", "2020-13-01"):
        with pytest.raises(ValueError):
            prunefilter.parse_time(bad, NOW)


def test_parse_refuses_other_keys_and_two_untils() -> None:
    with pytest.raises(errors.InvalidArgument, match="invalid filter 'colour'") as err:
        prunefilter.parse([("colour", "red")])
    assert err.value.reason == errors.UNSUPPORTED_FILTER
    with pytest.raises(errors.InvalidArgument, match="more than one until filter"):
        prunefilter.parse([("until", "1h"), ("until", "2h")])
    with pytest.raises(errors.InvalidArgument, match="failed to parse"):
        prunefilter.parse([("until", "soon")])
    with pytest.raises(errors.InvalidArgument, match="invalid filter 'until'"):
        prunefilter.parse([("until", "1h")], ("label", "label!"))


def test_matches_until_and_labels() -> None:
    f = prunefilter.parse([("until", "10m"), ("label", "app"), ("label", "tier=web")], now_ns=NOW)
    old = NOW - 3600 * 10**9
    assert f.matches(old, {"app": "x", "tier": "web"})
    assert not f.matches(NOW - 60 * 10**9, {"app": "x", "tier": "web"})  # too new
    assert not f.matches(old, {"app": "x"})  # every label filter must match
    assert not f.matches(old, {"app": "x", "tier": "db"})
    keep = prunefilter.parse([("label!", "keep"), ("label!", "keep2=yes")])
    assert keep.matches_labels({}) and keep.matches_labels({"keep": "1"})
    assert not keep.matches_labels({"keep": "1", "keep2": "yes"})  # Docker: excluded when every label! matches
    assert prunefilter.parse([]).matches(NOW, {})


def test_volume_prune_label_filters(graph: Graph) -> None:
    vs = graph.volumes
    assert vs is not None
    vs.create("va", labels={"prune": "t"})
    vs.create("vb", labels={"prune": "t", "keep": "yes"})
    vs.create("vc")
    anon = vs.create(labels={"prune": "t"}, anonymous=True)
    assert vs.prune(filters=[("label", "prune=t"), ("label!", "keep=yes")])[0] == [anon.name]  # named: kept
    assert vs.prune(filters=[("label", "prune=t"), ("label!", "keep=yes"), ("all", "true")])[0] == ["va"]
    assert sorted(v.name for v in vs.list()) == ["vb", "vc"]
    for bad in ([("until", "1h")], [("all", "maybe")], [("name", "vb")]):
        with pytest.raises(errors.InvalidArgument):
            vs.prune(filters=bad)
    assert sorted(v.name for v in vs.list()) == ["vb", "vc"]
