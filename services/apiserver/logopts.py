"""Log drivers and their options (``--log-driver``, ``--log-opt``), Docker's rules and messages.

``json-file`` (the default) and ``none`` are supported. Rotation is on by
default: a json-file log without ``max-size``/``max-file`` rotates at
:data:`DEFAULT_MAX_SIZE` bytes and keeps :data:`DEFAULT_MAX_FILE` files (the
values of Docker's ``local`` driver); sizes are go-units ``FromHumanSize``
(decimal: ``10m`` is 10,000,000 bytes), as Docker's json-file driver reads them.
"""

from __future__ import annotations

import re

from skiff.common import errors
from skiff.exec.v1 import exec_pb2
from skiff.types.v1 import types_pb2

DRIVERS = ("json-file", "none")
DEFAULT_DRIVER = "json-file"
DEFAULT_MAX_SIZE = 20_000_000
DEFAULT_MAX_FILE = 5
#: Accepted by Docker's json-file driver; only max-size, max-file and compress change anything here (and the
#: generic ``mode``/``max-buffer-size`` are checked but change nothing: the monitor never blocks
#: the container on a slow reader, it writes the file itself).
JSON_FILE_OPTS = ("max-size", "max-file", "compress", "labels", "labels-regex", "env", "env-regex", "tag")

_SIZE = re.compile(r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_DECIMAL = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15}


def from_human_size(text: str) -> int:
    """go-units ``FromHumanSize``: ``10m`` -> 10000000; ValueError ``invalid size: '...'``."""
    m = _SIZE.match(text)
    if not m or m.group(1).count(".") > 1:
        raise ValueError(f"invalid size: '{text}'")
    return int(float(m.group(1)) * _DECIMAL.get((m.group(2) or "").lower(), 1))


def resolve(given: types_pb2.LogConfig, default: types_pb2.LogConfig | None = None) -> types_pb2.LogConfig:
    """The container's log config: the daemon's default type (and options, for that type) fill the gaps."""
    out = types_pb2.LogConfig()
    out.CopyFrom(given)
    default_type = (default.type if default is not None and default.type else DEFAULT_DRIVER)
    if not out.type:
        out.type = default_type
    if not out.config and default is not None and out.type == default_type:
        out.config.update(default.config)
    validate(out)
    return out


def validate(cfg: types_pb2.LogConfig) -> tuple[int, int]:
    """(max size, max file) of a json-file log, (0, 0) for none; INVALID_ARGUMENT with Docker's message."""
    if cfg.type not in DRIVERS:
        raise errors.InvalidArgument(f"logger: no log driver named '{cfg.type}' is registered")
    if cfg.type == "none":
        return 0, 0  # as Docker: options of the none driver are not checked
    mode = cfg.config.get("mode", "")
    if mode not in ("", "blocking", "non-blocking"):
        raise errors.InvalidArgument(f"logger: logger log mode not supported: {mode}")
    if "max-buffer-size" in cfg.config and mode != "non-blocking":
        raise errors.InvalidArgument("logger: max-buffer-size option is only supported with 'mode=non-blocking'")
    for key in sorted(cfg.config):
        if key not in JSON_FILE_OPTS and key not in ("mode", "max-buffer-size"):
            raise errors.InvalidArgument(f"unknown log opt '{key}' for json-file log driver")
    size, files = DEFAULT_MAX_SIZE, DEFAULT_MAX_FILE
    if "max-size" in cfg.config:
        try:
            size = from_human_size(cfg.config["max-size"])
        except ValueError as e:
            raise errors.InvalidArgument(str(e)) from None
        if size <= 0:
            raise errors.InvalidArgument("max-size must be a positive number")
    if "max-file" in cfg.config:
        text = cfg.config["max-file"]
        try:
            files = int(text)
        except ValueError:
            raise errors.InvalidArgument(f'strconv.Atoi: parsing "{text}": invalid syntax') from None
        if files < 1:
            raise errors.InvalidArgument("max-file cannot be less than 1")
    compress = cfg.config.get("compress", "false").lower()
    if compress not in ("false", "0", "f", "true", "1", "t"):
        raise errors.InvalidArgument(f'strconv.ParseBool: parsing "{cfg.config["compress"]}": invalid syntax')
    return size, files


def compressed(cfg: types_pb2.LogConfig) -> bool:
    """json-file ``compress=true``: rotated files are gzipped."""
    return cfg.config.get("compress", "false").lower() in ("true", "1", "t")


def fill_task_spec(spec: exec_pb2.TaskSpec, cfg: types_pb2.LogConfig) -> None:
    """The log fields of a TaskSpec (a record from before log configs reads as the default)."""
    resolved = resolve(cfg)
    size, files = validate(resolved)
    spec.log_driver = resolved.type
    spec.log_max_size, spec.log_max_file = size, files
    spec.log_compress = resolved.type != "none" and compressed(resolved)


def parse_opts(items: list[str]) -> dict[str, str]:
    """``--log-opt key=value`` items; InvalidArgument for one without ``=``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise errors.InvalidArgument(f"invalid log opt {item!r}: want key=value")
        out[key] = value
    return out
