"""Health-check rules without a container: Docker's state machine, flags, HEALTHCHECK and the image merge."""

from __future__ import annotations

import argparse

import pytest

from skiff.cli import exits
from skiff.cli.health import add_run_flags, apply_run_flags
from skiff.common.durations import parse_duration
from skiff.common.errors import InvalidArgument
from skiff.execsvc.health import MAX_LOG_ENTRIES, apply_result, config_from_proto
from skiff.graphsvc.changes import parse
from skiff.graphsvc.graph import merge_healthcheck
from skiff.types.v1 import types_pb2

CHECK = {"args": ["true"], "interval": 10**9, "timeout": 10**9, "startPeriod": 5 * 10**9, "retries": 2}


def _r(code: int, at: float) -> dict[str, object]:
    from datetime import UTC, datetime

    ts = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"start": ts, "end": ts, "exitCode": code, "output": ""}


def test_state_machine() -> None:
    st: dict[str, object] = {"status": "starting"}
    apply_result(st, _r(1, 1003), CHECK, 1000)  # in the start period: does not count
    assert st["status"] == "starting" and st.get("failingStreak", 0) == 0
    apply_result(st, _r(1, 1006), CHECK, 1000)
    assert st["status"] == "starting" and st["failingStreak"] == 1
    apply_result(st, _r(1, 1007), CHECK, 1000)
    assert st["status"] == "unhealthy" and st["failingStreak"] == 2
    apply_result(st, _r(0, 1008), CHECK, 1000)
    assert st["status"] == "healthy" and st["failingStreak"] == 0
    apply_result(st, _r(1, 1009), CHECK, 1000)  # healthy: one failure is not enough
    assert st["status"] == "healthy"
    for i in range(10):
        apply_result(st, _r(0, 1010 + i), CHECK, 1000)
    assert len(st["log"]) == MAX_LOG_ENTRIES  # type: ignore[arg-type]


def test_config_from_proto() -> None:
    assert config_from_proto(types_pb2.Healthcheck()) is None
    assert config_from_proto(types_pb2.Healthcheck(test=["NONE"])) is None
    c = config_from_proto(types_pb2.Healthcheck(test=["CMD-SHELL", "curl x"]))
    assert c is not None and c["args"] == ["/bin/sh", "-c", "curl x"] and c["retries"] == 3
    assert c["interval"] == c["timeout"] == 30 * 10**9
    assert config_from_proto(types_pb2.Healthcheck(test=["CMD", "a", "b"]))["args"] == ["a", "b"]  # type: ignore[index]
    with pytest.raises(InvalidArgument):
        config_from_proto(types_pb2.Healthcheck(test=["BOGUS"]))
    with pytest.raises(InvalidArgument):
        config_from_proto(types_pb2.Healthcheck(test=["CMD", "x"], interval_ns=5))


def test_durations() -> None:
    assert parse_duration("1m30s") == 90 * 10**9
    assert parse_duration("1.5s") == 1_500_000_000
    assert parse_duration("250ms") == 250_000_000
    for bad in ("", "10", "1x", "s"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def _flags(*argv: str) -> tuple[types_pb2.ContainerConfig, types_pb2.HostConfig]:
    p = argparse.ArgumentParser()
    add_run_flags(p)
    args = p.parse_args(list(argv))
    cfg, host = types_pb2.ContainerConfig(), types_pb2.HostConfig()
    apply_run_flags(cfg, host, args)
    return cfg, host


def test_cli_flags() -> None:
    cfg, host = _flags("--init", "--health-cmd", "true", "--health-interval", "2s", "--health-retries", "4")
    assert host.init and list(cfg.healthcheck.test) == ["CMD-SHELL", "true"]
    assert cfg.healthcheck.interval_ns == 2 * 10**9 and cfg.healthcheck.retries == 4
    cfg, _ = _flags("--no-healthcheck")
    assert list(cfg.healthcheck.test) == ["NONE"]
    cfg, _ = _flags()
    assert not cfg.HasField("healthcheck")
    with pytest.raises(exits.Usage, match="conflicts"):
        _flags("--no-healthcheck", "--health-cmd", "true")
    with pytest.raises(exits.Usage, match="invalid duration"):
        _flags("--health-interval", "soon")


def test_healthcheck_change_and_image_merge() -> None:
    ch = parse(["HEALTHCHECK --interval=5s --retries=2 CMD curl -f http://x/"], [])
    assert ch is not None and ch.healthcheck == {"Test": ["CMD-SHELL", "curl -f http://x/"],
                                                 "Interval": 5 * 10**9, "Retries": 2}
    assert parse(['HEALTHCHECK CMD ["a", "b"]'], []).healthcheck == {"Test": ["CMD", "a", "b"]}  # type: ignore[union-attr]
    assert parse(["HEALTHCHECK NONE"], []).healthcheck == {"Test": ["NONE"]}  # type: ignore[union-attr]
    with pytest.raises(InvalidArgument):
        parse(["HEALTHCHECK --bogus=1 CMD x"], [])
    # The user's fields win; the image's fill the others.
    cfg = types_pb2.ContainerConfig(healthcheck=types_pb2.Healthcheck(retries=7))
    merge_healthcheck(cfg, {"Test": ["CMD", "x"], "Interval": 10, "Retries": 2})
    assert list(cfg.healthcheck.test) == ["CMD", "x"] and cfg.healthcheck.interval_ns == 10
    assert cfg.healthcheck.retries == 7
    plain = types_pb2.ContainerConfig()
    merge_healthcheck(plain, None)
    assert not plain.HasField("healthcheck")
