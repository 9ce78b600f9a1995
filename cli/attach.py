"""Following a container's output, and proxying our signals to it (``--sig-proxy``).

Output is written to our stdout/stderr as bytes, unchanged, and flushed at once
so that ``skiff run`` behaves like the program it runs.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, TextIO

from skiff.cli import format as fmt

if TYPE_CHECKING:
    from skiff.api.v1 import api_pb2
    from skiff.cli.client import Client
    from skiff.types.v1 import types_pb2

log = logging.getLogger(__name__)

#: Signals Docker forwards to an attached container (all but SIGCHLD, SIGPIPE, SIGURG
#: and those that stop us); these are the ones a terminal user sends.
PROXIED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def write(stream: TextIO, data: bytes) -> None:
    """Write raw bytes to a text stream's buffer, keeping order with earlier print()s."""
    stream.flush()
    buf = getattr(stream, "buffer", None)
    if buf is None:
        stream.write(data.decode(errors="replace"))
        stream.flush()
        return
    buf.write(data)
    buf.flush()


def write_entry(entry: types_pb2.LogEntry, timestamps: bool = False) -> None:
    from skiff.types.v1 import types_pb2

    data = entry.data
    if timestamps:
        stamp = fmt.rfc3339nano_fixed(entry.time.seconds, entry.time.nanos)
        data = stamp.encode() + b" " + data
    out = sys.stderr if entry.stream == types_pb2.LOG_STREAM_STDERR else sys.stdout
    write(out, data)


def stream_output(responses: Iterable[api_pb2.AttachContainerResponse]) -> int | None:
    """Copy an attach stream to our stdout/stderr; the exit code, or None if none came."""
    for resp in responses:
        part = resp.WhichOneof("part")
        if part == "output":
            write_entry(resp.output)
        elif part == "exit":
            return resp.exit.exit_code
    return None


def attach_options(container: str, await_start: bool = False, start: bool = False,
                   await_removed: bool = False) -> Iterator[api_pb2.AttachContainerRequest]:
    """The request stream without stdin: the options only."""
    from skiff.api.v1 import api_pb2

    opts = api_pb2.AttachOptions(container=container, stdout=True, stderr=True, logs=True, await_start=await_start,
                                 start=start, await_removed=await_removed)
    yield api_pb2.AttachContainerRequest(options=opts)


@contextlib.contextmanager
def signal_proxy(client: Client, container: str, enabled: bool = True) -> Iterator[None]:
    """Forward PROXIED signals to the container with KillContainer while attached.

    The handler only starts a thread: the call must not run inside a signal
    handler, and the main thread must keep reading output until the exit arrives.
    """
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(name: str) -> None:
        from skiff.api.v1 import api_pb2

        try:
            with client.translated():
                client.containers.KillContainer(api_pb2.KillContainerRequest(container=container, signal=name),
                                                timeout=30)
        except Exception as err:  # the container may have exited meanwhile
            log.debug("forwarding %s: %s", name, err)

    def handler(signum: int, _frame: FrameType | None) -> None:
        threading.Thread(target=forward, args=(signal.Signals(signum).name,), daemon=True).start()

    previous: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}
    for sig in map(int, PROXIED):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
