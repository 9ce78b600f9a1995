"""``import --change`` instructions: the Dockerfile subset Docker accepts there."""

from __future__ import annotations

import json
import shlex
import signal
from typing import Any

from skiff.common.durations import parse_duration
from skiff.common.errors import InvalidArgument
from skiff.common.signals import parse_signal
from skiff.graphsvc.images import ImageChanges

SUPPORTED = ("CMD", "ENTRYPOINT", "ENV", "WORKDIR", "USER", "VOLUME", "EXPOSE", "HEALTHCHECK", "LABEL",
             "STOPSIGNAL", "ONBUILD")
_HC_OPTIONS = {"--interval": "Interval", "--timeout": "Timeout", "--start-period": "StartPeriod",
               "--retries": "Retries"}


def _command(keyword: str, value: str) -> list[str]:
    value = value.strip()
    if value.startswith("["):
        try:
            parsed = json.loads(value)
        except ValueError:
            raise InvalidArgument(f"{keyword}: invalid JSON array: {value}") from None
        if not isinstance(parsed, list) or not all(isinstance(v, str) for v in parsed):
            raise InvalidArgument(f"{keyword}: expected a JSON array of strings: {value}")
        return parsed
    return ["/bin/sh", "-c", value]  # shell form, as in a Dockerfile


def _env(value: str, env: list[str]) -> None:
    words = shlex.split(value)
    if len(words) >= 2 and "=" not in words[0]:  # legacy `ENV KEY value with spaces`
        env.append(f"{words[0]}={value.split(None, 1)[1]}")
        return
    for word in words:
        if "=" not in word or word.startswith("="):
            raise InvalidArgument(f"ENV: expected KEY=value, got {word!r}")
        env.append(word)


def _labels(value: str, labels: dict[str, str]) -> None:
    """``LABEL a=1 "b c"="two words"`` (a legacy ``LABEL key value`` too, as in a Dockerfile)."""
    try:
        words = shlex.split(value)
    except ValueError as err:
        raise InvalidArgument(f"LABEL: {err}: {value.strip()!r}") from None
    if len(words) >= 2 and "=" not in words[0]:
        labels[words[0]] = value.split(None, 1)[1].strip()
        return
    if not words:
        raise InvalidArgument("LABEL: expected KEY=value")
    for word in words:
        key, sep, val = word.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"LABEL: expected KEY=value, got {word!r}")
        labels[key] = val


def _stop_signal(value: str) -> str:
    """``STOPSIGNAL SIGUSR1`` (or ``USR1``, ``10``): kept as written once it names a signal."""
    text = value.strip()
    if not text:
        raise InvalidArgument("STOPSIGNAL: expected a signal name or number")
    parse_signal(text, default=signal.SIGTERM)
    return text


def _expose(value: str, exposed: list[str]) -> None:
    """``EXPOSE 80 8080/tcp 53/udp`` as ``80/tcp`` … (Docker's form of ExposedPorts keys)."""
    for word in value.split():
        port, _, proto = word.partition("/")
        proto = (proto or "tcp").lower()
        if not port.isdigit() or not 0 < int(port) < 65536 or proto not in ("tcp", "udp", "sctp"):
            raise InvalidArgument(f"EXPOSE: invalid port {word!r}: want PORT[/tcp|udp]")
        if f"{int(port)}/{proto}" not in exposed:
            exposed.append(f"{int(port)}/{proto}")


def _healthcheck(value: str) -> dict[str, Any]:
    """``HEALTHCHECK [--interval=D --timeout=D --start-period=D --retries=N] CMD command`` or ``NONE``."""
    rest = value.strip()
    out: dict[str, Any] = {}
    while rest.startswith("--"):
        opt, _, rest = rest.partition(" ")
        rest = rest.lstrip()
        key, sep, val = opt.partition("=")
        if not sep or key not in _HC_OPTIONS:
            raise InvalidArgument(f"HEALTHCHECK: unknown option {opt!r}")
        try:
            out[_HC_OPTIONS[key]] = int(val) if key == "--retries" else parse_duration(val)
        except ValueError as err:
            raise InvalidArgument(f"HEALTHCHECK {key}: {err}") from None
    keyword, _, command = rest.partition(" ")
    if keyword.upper() == "NONE" and not command.strip():
        return {"Test": ["NONE"]}
    if keyword.upper() != "CMD" or not command.strip():
        raise InvalidArgument("HEALTHCHECK: expected NONE or CMD <command>")
    cmd = command.strip()
    out["Test"] = ["CMD", *_command("HEALTHCHECK", cmd)] if cmd.startswith("[") else ["CMD-SHELL", cmd]
    return out


def parse(changes: list[str], default_env: list[str]) -> ImageChanges | None:
    if not changes:
        return None
    cmd = entrypoint = None
    env: list[str] | None = None
    workdir = user = None
    volumes: list[str] | None = None
    exposed: list[str] | None = None
    healthcheck = None
    labels: dict[str, str] | None = None
    stop_signal: str | None = None
    onbuild: list[str] | None = None
    for change in changes:
        keyword, _, value = change.strip().partition(" ")
        keyword = keyword.upper()
        if keyword not in SUPPORTED:
            raise InvalidArgument(f"{keyword or change!r} is not a valid change command "
                                  f"(supported: {', '.join(SUPPORTED)})")
        if keyword == "CMD":
            cmd = _command(keyword, value)
        elif keyword == "ENTRYPOINT":
            entrypoint = _command(keyword, value)
        elif keyword == "ENV":
            env = env if env is not None else list(default_env)
            _env(value, env)
        elif keyword == "VOLUME":
            paths = _command(keyword, value) if value.strip().startswith("[") else value.split()
            if not paths or not all(isinstance(p, str) and p.startswith("/") for p in paths):
                raise InvalidArgument(f"VOLUME: expected absolute paths, got {value.strip()!r}")
            volumes = (volumes or []) + paths
        elif keyword == "HEALTHCHECK":
            healthcheck = _healthcheck(value)
        elif keyword == "WORKDIR":
            workdir = value.strip()
            if not workdir.startswith("/"):
                raise InvalidArgument(f"WORKDIR must be absolute: {workdir!r}")
        elif keyword == "LABEL":
            labels = labels if labels is not None else {}
            _labels(value, labels)
        elif keyword == "STOPSIGNAL":
            stop_signal = _stop_signal(value)
        elif keyword == "ONBUILD":
            trigger = value.strip()
            if not trigger or trigger.split()[0].upper() in ("ONBUILD", "FROM", "MAINTAINER"):
                raise InvalidArgument(f"ONBUILD: invalid trigger {trigger!r}")
            onbuild = [*(onbuild or []), trigger]
        elif keyword == "EXPOSE":
            exposed = exposed if exposed is not None else []
            _expose(value, exposed)
        else:
            user = value.strip()
    return ImageChanges(cmd=cmd, entrypoint=entrypoint, env=env, workdir=workdir, user=user, volumes=volumes,
                        exposed=exposed, healthcheck=healthcheck, labels=labels, stop_signal=stop_signal,
                        onbuild=onbuild)
