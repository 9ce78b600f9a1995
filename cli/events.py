"""``skiff events`` (and ``system events``): the engine's events, as Docker's ``docker events``.

Default line (Docker's): ``2024-01-02T03:04:05.123456789Z container start <id> (image=busybox, name=x)``,
the time in the local zone, attributes sorted by key. ``--format json`` prints one JSON object
per event (Docker's events.Message fields); any other ``--format`` is a Go template
(``{{.Type}}``, ``{{.Action}}``, ``{{.Actor.ID}}``, ``{{.Actor.Attributes.name}}``, ``{{json .}}``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from skiff.cli import exits
from skiff.cli.args import add_command

if TYPE_CHECKING:
    from skiff.cli.client import Client

_TYPES = {1: "container", 2: "image", 3: "network", 4: "volume", 5: "daemon"}


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "events", cmd_events, "Get real time events from the server")
    add_arguments(p)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--filter", action="append", default=[], metavar="FILTER",
                   help="filter output based on conditions provided (type, event, container, image, label, "
                        "network, volume, daemon, scope)")
    p.add_argument("--since", default="", help="show all events created since timestamp")
    p.add_argument("--until", default="", help="stream events until this timestamp")
    p.add_argument("--format", default="", help="format the output using a Go template, or 'json'")


def parse_filters(texts: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for text in texts:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise exits.Usage(f"bad format of filter (expected name=value): {text}")
        out.append((key.strip().lower(), value))
    return out


def format_time(seconds: int, nanos: int) -> str:
    """Go's RFC3339NanoFixed in the local zone: ``2024-01-02T03:04:05.123456789Z`` (or ``+02:00``)."""
    dt = datetime.datetime.fromtimestamp(seconds, datetime.UTC).astimezone()
    offset = dt.utcoffset() or datetime.timedelta(0)
    if offset:
        total = int(offset.total_seconds())
        sign = "-" if total < 0 else "+"
        zone = f"{sign}{abs(total) // 3600:02d}:{abs(total) % 3600 // 60:02d}"
    else:
        zone = "Z"
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{nanos:09d}{zone}"


def line(type_name: str, action: str, actor_id: str, attributes: Mapping[str, str], seconds: int,
         nanos: int) -> str:
    """Docker's default line for one event."""
    text = f"{format_time(seconds, nanos)} {type_name} {action} {actor_id}"
    if attributes:
        text += " (" + ", ".join(f"{k}={attributes[k]}" for k in sorted(attributes)) + ")"
    return text


def message(type_name: str, action: str, actor_id: str, attributes: Mapping[str, str], scope: str,
            seconds: int, nanos: int) -> dict[str, Any]:
    """Docker's events.Message, as its JSON has it (status/id/from for container and image events)."""
    doc: dict[str, Any] = {}
    if type_name in ("container", "image"):
        doc["status"] = action
        doc["id"] = actor_id
        if "image" in attributes and type_name == "container":
            doc["from"] = attributes["image"]
    doc.update({"Type": type_name, "Action": action,
                "Actor": {"ID": actor_id, "Attributes": dict(attributes)},
                "scope": scope, "time": seconds, "timeNano": seconds * 1_000_000_000 + nanos})
    return doc


def render(template: str, doc: Mapping[str, Any]) -> str:
    if template.strip() == "json":
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    from skiff.cli.inspect import render as go_render

    return go_render(template, dict(doc))


def cmd_events(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2
    from skiff.cli.containers import set_time_range
    from skiff.types.v1 import types_pb2

    request = api_pb2.EventsRequest(filters=[types_pb2.Filter(key=k, value=v) for k, v in parse_filters(args.filter)])
    set_time_range(request, args, time.time_ns())
    stream = None
    try:
        with client.translated():
            stream = client.system.Events(request)
            for resp in stream:
                ev = resp.event
                type_name = _TYPES.get(ev.type, "")
                attrs = dict(ev.actor.attributes)
                if args.format:
                    out = render(args.format, message(type_name, ev.action, ev.actor.id, attrs, ev.scope,
                                                      ev.time.seconds, ev.time.nanos))
                else:
                    out = line(type_name, ev.action, ev.actor.id, attrs, ev.time.seconds, ev.time.nanos)
                sys.stdout.write(out + "\n")
                sys.stdout.flush()
    except KeyboardInterrupt:  # Ctrl-C: the end of a live stream, not an error
        if stream is not None:
            stream.cancel()
        return 0
    return 0
