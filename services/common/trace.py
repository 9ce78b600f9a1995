"""Per-phase traces of one client command, recorded by the engine itself.

A client that wants a breakdown sends the metadata ``skiff-trace-id: <hex>`` with
each call (the CLI does with ``--debug`` or ``SKIFF_TRACE=1``). Every service
records spans (service, name, wall-clock start in ns, duration in ns) for the
calls that carry an id:

* the server interceptor records one span per RPC and makes the id current for
  the handler (a context variable; :func:`span` adds spans to it);
* between the daemon's services, the client interceptor forwards the id and
  takes the spans of a unary call back from its trailing metadata
  (``skiff-trace-spans``, JSON);
* the gateway keeps the spans of its last traces in memory, and
  ``SystemService.GetTrace`` returns them, sorted by start.

Nothing is recorded, sent or kept for a call without an id. Wall-clock
(``CLOCK_REALTIME``) times let spans from several processes (and the C monitor's
timestamps) be put on one time line.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

#: Invocation metadata: the trace the call belongs to.
TRACE_KEY = "skiff-trace-id"
#: Trailing metadata of a traced call between services: its spans as JSON.
SPANS_KEY = "skiff-trace-spans"
#: Traces the gateway keeps (oldest dropped first).
MAX_TRACES = 64
#: Spans kept per trace (a long follow must not grow without bound).
MAX_SPANS = 512


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    start_ns: int
    duration_ns: int

    def to_json(self) -> list[Any]:
        return [self.service, self.name, self.start_ns, self.duration_ns]

    @classmethod
    def from_json(cls, v: list[Any]) -> Span:
        return cls(str(v[0]), str(v[1]), int(v[2]), int(v[3]))


class Trace:
    """The spans of one trace id in this process (thread-safe)."""

    def __init__(self, trace_id: str, service: str):
        self.id = trace_id
        self.service = service
        self._spans: list[Span] = []
        self._seen: set[tuple[str, str, int]] = set()
        self._lock = threading.Lock()

    def add(self, span: Span) -> None:
        """Keeps one of equal spans (the monitor's times are reported by every wait)."""
        key = (span.service, span.name, span.start_ns)
        with self._lock:
            if len(self._spans) < MAX_SPANS and key not in self._seen:
                self._seen.add(key)
                self._spans.append(span)

    def extend(self, spans: list[Span]) -> None:
        for s in spans:
            self.add(s)

    def spans(self) -> list[Span]:
        with self._lock:
            return sorted(self._spans, key=lambda s: (s.start_ns, -s.duration_ns))


_current: contextvars.ContextVar[Trace | None] = contextvars.ContextVar("skiff_trace", default=None)


def current() -> Trace | None:
    return _current.get()


@contextlib.contextmanager
def activate(trace: Trace | None) -> Iterator[None]:
    """Make ``trace`` current in this thread (e.g. in a thread started for a traced call)."""
    token = _current.set(trace)
    try:
        yield
    finally:
        _current.reset(token)


@contextlib.contextmanager
def span(name: str) -> Iterator[None]:
    """Record the block as a span of the current trace; free when there is none."""
    trace = _current.get()
    if trace is None:
        yield
        return
    start, t0 = time.time_ns(), time.perf_counter_ns()
    try:
        yield
    finally:
        trace.add(Span(trace.service, name, start, time.perf_counter_ns() - t0))


def event(name: str, start_ns: int, end_ns: int | None = None, service: str | None = None) -> None:
    """Record a span measured elsewhere (wall-clock ns), e.g. from the monitor's files."""
    trace = _current.get()
    if trace is None or start_ns <= 0:
        return
    trace.add(Span(service or trace.service, name, start_ns, max(0, (end_ns or start_ns) - start_ns)))


class Store:
    """The gateway's last traces, by id."""

    def __init__(self, service: str, keep: int = MAX_TRACES):
        self.service = service
        self._keep = keep
        self._traces: OrderedDict[str, Trace] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_create(self, trace_id: str) -> Trace:
        with self._lock:
            trace = self._traces.get(trace_id)
            if trace is None:
                trace = self._traces[trace_id] = Trace(trace_id, self.service)
                while len(self._traces) > self._keep:
                    self._traces.popitem(last=False)
            return trace

    def get(self, trace_id: str) -> Trace | None:
        with self._lock:
            return self._traces.get(trace_id)


def _trace_id(context: grpc.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == TRACE_KEY and isinstance(value, str) and 0 < len(value) <= 64:
            return value
    return None


class ServerInterceptor(grpc.ServerInterceptor):
    """Records a span per traced RPC; with a store (the gateway) keeps the trace, else
    returns the spans of a unary call in its trailing metadata."""

    def __init__(self, service: str, store: Store | None = None):
        self.service = service
        self.store = store

    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        traced = any(k == TRACE_KEY for k, _ in handler_call_details.invocation_metadata or ())
        if not traced:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=self._unary(handler.unary_unary, method))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=self._stream(handler.unary_stream, method))
        if handler.stream_stream is not None:
            return handler._replace(stream_stream=self._stream(handler.stream_stream, method))
        return handler

    def _begin(self, context: grpc.ServicerContext) -> Trace | None:
        trace_id = _trace_id(context)
        if trace_id is None:
            return None
        return self.store.get_or_create(trace_id) if self.store else Trace(trace_id, self.service)

    def _unary(self, behaviour: Callable[[Any, Any], Any], method: str) -> Callable[[Any, Any], Any]:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            trace = self._begin(context)
            if trace is None:
                return behaviour(request, context)
            with activate(trace), span(method):
                response = behaviour(request, context)
            if self.store is None:
                context.set_trailing_metadata(((SPANS_KEY, json.dumps([s.to_json() for s in trace.spans()])),))
            return response

        return wrapped

    def _stream(self, behaviour: Callable[[Any, Any], Any], method: str) -> Callable[[Any, Any], Any]:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            trace = self._begin(context)
            if trace is None:
                yield from behaviour(request, context)
                return
            # Each step runs in the context, not the whole generator: grpc may resume it elsewhere.
            it = iter(behaviour(request, context))
            start, t0 = time.time_ns(), time.perf_counter_ns()
            try:
                while True:
                    token = _current.set(trace)
                    try:
                        item = next(it)
                    except StopIteration:
                        return
                    finally:
                        _current.reset(token)
                    yield item
            finally:
                trace.add(Span(trace.service, method, start, time.perf_counter_ns() - t0))

        return wrapped


class _Details(grpc.ClientCallDetails):  # type: ignore[misc]
    def __init__(self, base: grpc.ClientCallDetails, metadata: list[tuple[str, str]]):
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


def _with_id(details: grpc.ClientCallDetails, trace: Trace) -> _Details:
    return _Details(details, [*(details.metadata or ()), (TRACE_KEY, trace.id)])


class ClientInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Forwards the current trace id to the daemon's other services and collects their spans."""

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        trace = _current.get()
        if trace is None:
            return continuation(client_call_details, request)
        outcome = continuation(_with_id(client_call_details, trace), request)

        def harvest(done: Any) -> None:  # never blocks the caller (a wait may be cancelled)
            with contextlib.suppress(Exception):
                for key, value in done.trailing_metadata() or ():
                    if key == SPANS_KEY:
                        trace.extend([Span.from_json(v) for v in json.loads(value)])

        outcome.add_done_callback(harvest)
        return outcome

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        trace = _current.get()
        if trace is None:
            return continuation(client_call_details, request)
        return continuation(_with_id(client_call_details, trace), request)


def new_id() -> str:
    import os

    return os.urandom(8).hex()


def breakdown(spans: list[Span]) -> list[tuple[str, str, float, float]]:
    """(service, name, offset from the first span in ms, duration in ms), in time order."""
    if not spans:
        return []
    t0 = min(s.start_ns for s in spans)
    return [(s.service, s.name, (s.start_ns - t0) / 1e6, s.duration_ns / 1e6) for s in spans]


def format_breakdown(spans: list[Span]) -> str:
    lines = [f"{'at ms':>8} {'took ms':>8}  {'service':<10} phase"]
    for service, name, at, took in breakdown(spans):
        lines.append(f"{at:8.1f} {took:8.1f}  {service:<10} {name}")
    return "\n".join(lines)
