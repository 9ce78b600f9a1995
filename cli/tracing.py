"""``skiff --debug`` (or ``SKIFF_TRACE=1``): the engine's per-phase breakdown of a command.

Every call of the command carries one trace id (metadata ``skiff-trace-id``, see
skiff.common.trace); when the command ends, the CLI asks the gateway for the
spans (``SystemService.GetTrace``) and prints them on stderr, with the CLI's own
wall time. ``SKIFF_TRACE=<file>`` writes them to that file (JSON) instead.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import grpc

    from skiff.cli.client import Client

TRACE_KEY = "skiff-trace-id"  # same as skiff.common.trace.TRACE_KEY
#: when the CLI started (as close to the process start as we can see it)
STARTED_NS = time.time_ns()


def wanted(debug: bool) -> bool:
    return debug or bool(os.environ.get("SKIFF_TRACE"))


def new_id() -> str:
    return os.urandom(8).hex()


def wrap(channel: grpc.Channel, trace_id: str) -> grpc.Channel:
    """The channel, with the trace id added to every call's metadata."""
    import grpc

    class _Details(grpc.ClientCallDetails):  # type: ignore[misc]
        def __init__(self, base: Any):
            self.method, self.timeout, self.credentials = base.method, base.timeout, base.credentials
            self.metadata = [*(base.metadata or ()), (TRACE_KEY, trace_id)]
            self.wait_for_ready = getattr(base, "wait_for_ready", None)
            self.compression = getattr(base, "compression", None)

    class _Add(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
               grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
        def intercept_unary_unary(self, cont: Any, details: Any, request: Any) -> Any:
            return cont(_Details(details), request)

        def intercept_unary_stream(self, cont: Any, details: Any, request: Any) -> Any:
            return cont(_Details(details), request)

        def intercept_stream_unary(self, cont: Any, details: Any, requests: Any) -> Any:
            return cont(_Details(details), requests)

        def intercept_stream_stream(self, cont: Any, details: Any, requests: Any) -> Any:
            return cont(_Details(details), requests)

    return grpc.intercept_channel(channel, _Add())


def spans(client: Client, trace_id: str) -> list[tuple[str, str, int, int]]:
    """(service, phase, start ns, duration ns) of the trace, from the gateway."""
    from skiff.api.v1 import api_pb2, api_pb2_grpc

    stub = api_pb2_grpc.SystemServiceStub(client.raw_channel)
    resp = stub.GetTrace(api_pb2.GetTraceRequest(trace_id=trace_id), timeout=10)
    return [(s.service, s.name, s.start_unix_nanos, s.duration_nanos) for s in resp.spans]


def format_table(rows: list[tuple[str, str, int, int]], t0: int) -> str:
    lines = [f"{'at ms':>8} {'took ms':>8}  {'service':<10} phase"]
    for service, name, start, dur in sorted(rows, key=lambda r: (r[2], -r[3])):
        lines.append(f"{(start - t0) / 1e6:8.1f} {dur / 1e6:8.1f}  {service:<10} {name}")
    return "\n".join(lines)


def report(client: Client, trace_id: str) -> None:
    """Print (or write to $SKIFF_TRACE when it names a file) the breakdown; never fails the command."""
    end = time.time_ns()
    try:
        rows = spans(client, trace_id)
    except Exception as err:  # the command's result matters more than its trace
        print(f"trace {trace_id}: not available: {err}", file=sys.stderr)
        return
    rows.append(("cli", "command (wall time, after start-up)", STARTED_NS, end - STARTED_NS))
    dest = os.environ.get("SKIFF_TRACE", "")
    if dest not in ("", "1"):
        with open(dest, "w") as f:
            json.dump({"trace_id": trace_id, "spans": rows}, f)
        return
    print(f"trace {trace_id}:\n{format_table(rows, STARTED_NS)}", file=sys.stderr)
