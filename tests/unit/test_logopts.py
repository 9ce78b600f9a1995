"""Log driver options (Docker's rules) and the CLI's --since/--until formats."""

from __future__ import annotations

import datetime
import time

import pytest

from skiff.apiserver import logopts
from skiff.cli.containers import parse_timestamp
from skiff.common import errors
from skiff.exec.v1 import exec_pb2
from skiff.types.v1 import types_pb2


def test_sizes_are_decimal_as_docker_json_file() -> None:
    assert logopts.from_human_size("10m") == 10_000_000
    assert logopts.from_human_size("1k") == 1000 and logopts.from_human_size("2048") == 2048
    assert logopts.from_human_size("1.5MB") == 1_500_000
    for bad in ("ten", "-1", "1x"):
        with pytest.raises(ValueError, match="invalid size"):
            logopts.from_human_size(bad)


def test_defaults_rotate_and_the_daemon_default_applies() -> None:
    spec = exec_pb2.TaskSpec()
    logopts.fill_task_spec(spec, types_pb2.LogConfig())
    assert (spec.log_driver, spec.log_max_size, spec.log_max_file) == ("json-file", 20_000_000, 5)
    daemon = types_pb2.LogConfig(type="json-file", config={"max-size": "1m", "max-file": "2"})
    got = logopts.resolve(types_pb2.LogConfig(), daemon)
    assert got.type == "json-file" and dict(got.config) == {"max-size": "1m", "max-file": "2"}
    got = logopts.resolve(types_pb2.LogConfig(config={"max-file": "3"}), daemon)
    assert dict(got.config) == {"max-file": "3"}  # the container's options replace the daemon's
    assert logopts.validate(got) == (20_000_000, 3)
    assert logopts.resolve(types_pb2.LogConfig(), types_pb2.LogConfig(type="none")).type == "none"


@pytest.mark.parametrize("cfg,message", [
    ({"max-file": "0"}, "max-file cannot be less than 1"),
    ({"max-file": "x"}, 'parsing "x": invalid syntax'),
    ({"max-size": "0"}, "max-size must be a positive number"),
    ({"compress": "maybe"}, 'parsing "maybe": invalid syntax'),
    ({"nope": "1"}, "unknown log opt 'nope' for json-file log driver"),
    ({"mode": "fast"}, "logger log mode not supported: fast"),
    ({"max-buffer-size": "4m"}, "only supported with 'mode=non-blocking'"),
])
def test_invalid_options(cfg: dict[str, str], message: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=message):
        logopts.validate(types_pb2.LogConfig(type="json-file", config=cfg))


def test_none_ignores_options_and_non_blocking_is_accepted() -> None:
    assert logopts.validate(types_pb2.LogConfig(type="none", config={"max-size": "1m"})) == (0, 0)
    cfg = types_pb2.LogConfig(type="json-file", config={"mode": "non-blocking", "max-buffer-size": "4m"})
    assert logopts.validate(cfg) == (logopts.DEFAULT_MAX_SIZE, logopts.DEFAULT_MAX_FILE)


def test_compress_goes_into_the_task_spec() -> None:
    spec = exec_pb2.TaskSpec()
    logopts.fill_task_spec(spec, types_pb2.LogConfig(type="json-file", config={"compress": "true", "max-file": "3"}))
    assert (spec.log_compress, spec.log_max_file) == (True, 3)
    logopts.fill_task_spec(spec, types_pb2.LogConfig(type="json-file", config={"compress": "false"}))
    assert not spec.log_compress


def test_unknown_driver() -> None:
    with pytest.raises(errors.InvalidArgument, match="no log driver named 'gelf'"):
        logopts.validate(types_pb2.LogConfig(type="gelf"))


def test_docker_timestamp_formats() -> None:
    now = 1_700_000_000 * 10**9 + 5
    assert parse_timestamp("10m", now) == (1_700_000_000 - 600, 5)
    assert parse_timestamp("1h30m", now) == (1_700_000_000 - 5400, 5)
    assert parse_timestamp("1.5s", now) == (1_699_999_998, 500_000_005)
    assert parse_timestamp("1700000000", now) == (1_700_000_000, 0)
    assert parse_timestamp("1700000000.25", now) == (1_700_000_000, 250_000_000)
    assert parse_timestamp("2023-11-14T22:13:20Z", now) == (1_700_000_000, 0)
    assert parse_timestamp("2023-11-14T22:13:20.000000123Z", now) == (1_700_000_000, 123)
    assert parse_timestamp("2023-11-15T00:13:20+02:00", now) == (1_700_000_000, 0)
    local = datetime.datetime(2023, 11, 14, 22, 13).timestamp()
    assert parse_timestamp("2023-11-14T22:13", now) == (int(local), 0)
    assert parse_timestamp("2023-11-14", now)[0] == int(datetime.datetime(2023, 11, 14).timestamp())
    for bad in ("yesterday", "2023-13-01", "12-3"):
        with pytest.raises(ValueError):
            parse_timestamp(bad, time.time_ns())


def test_daemon_default_reaches_the_gateway() -> None:
    from skiff.apiserver.server import parse_args as api_args
    from skiff.supervisor.main import build_specs, parse_args

    args = parse_args(["--log-driver", "json-file", "--log-opt", "max-size=1m", "--log-opt", "max-file=2"])
    api = next(s for s in build_specs(args, python="/py") if s.name == "apiserver").argv
    parsed = api_args(api[3:])  # after "/py -m skiff.apiserver"
    assert parsed.log_driver == "json-file" and parsed.log_opt == ["max-size=1m", "max-file=2"]
    default = logopts.resolve(types_pb2.LogConfig(type=parsed.log_driver,
                                                  config=logopts.parse_opts(parsed.log_opt)))
    assert logopts.validate(default) == (1_000_000, 2)
    plain = next(s for s in build_specs(parse_args([]), python="/py") if s.name == "apiserver").argv
    assert "--log-driver" not in plain and "--log-opt" not in plain
