"""Interactive streams: stdin (``-i``), a terminal (``-t``), detaching, and ``skiff attach``.

The request side of AttachContainer / ExecContainer is :class:`Input`: the options
first, the terminal size (with a tty, and again on SIGWINCH), then what we read from
stdin; our EOF ends the request stream (the gateway closes the process's stdin for
``run -i`` and ``exec -i``). Detach keys are matched by the gateway, which ends the
response stream with ``detached``; the container runs on.

With a tty and a terminal on our side, the terminal is put in raw mode (every key
goes to the container, ctrl-c included) and restored on every way out.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import signal
import sys
import termios
import threading
import tty as ttymod
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

from skiff.cli import attach, exits
from skiff.cli.args import add_command, parse_bool
from skiff.common import detachkeys

if TYPE_CHECKING:
    from skiff.cli.client import Client

_EOF = object()
_CHUNK = 4096


def check_detach_keys(keys: str) -> str:
    try:
        detachkeys.parse(keys)
    except ValueError as err:
        raise exits.Usage(str(err)) from None
    return keys


def terminal_size() -> tuple[int, int] | None:
    for fd in (1, 0, 2):
        try:
            size = os.get_terminal_size(fd)
            return size.lines, size.columns
        except OSError:
            continue
    return None


class Input:
    """The request stream of an attach or exec: ``first``, then resizes and stdin, in order."""

    def __init__(self, first: Any, request_type: Any, *, stdin: bool, tty: bool):
        self._first = first
        self._type = request_type
        self.stdin = stdin
        self.tty = tty
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=32)
        self._done = threading.Event()

    def requests(self) -> Iterator[Any]:
        yield self._first
        if self.tty:
            self.resize()
        if self.stdin:
            threading.Thread(target=self._read_stdin, name="stdin", daemon=True).start()
        while not self._done.is_set():
            try:
                item = self._queue.get(timeout=0.25)
            except queue.Empty:
                continue
            if item is _EOF:
                return  # half-close: EOF for the process's stdin
            yield item

    def _read_stdin(self) -> None:
        fd = sys.stdin.fileno()
        while not self._done.is_set():
            try:
                data = os.read(fd, _CHUNK)
            except OSError:
                data = b""
            item = self._type(stdin=data) if data else _EOF
            while not self._done.is_set():
                try:
                    self._queue.put(item, timeout=0.25)
                    break
                except queue.Full:
                    continue
            if not data:
                return

    def resize(self) -> None:
        from skiff.types.v1 import types_pb2

        size = terminal_size()
        if size is not None:
            try:
                self._queue.put_nowait(self._type(resize=types_pb2.TerminalSize(rows=size[0], cols=size[1])))
            except queue.Full:
                pass  # the next SIGWINCH will tell again

    def close(self) -> None:
        """The output ended: the request stream ends too (without anything more)."""
        self._done.set()

    @contextlib.contextmanager
    def terminal(self) -> Iterator[None]:
        """Raw mode and SIGWINCH while attached with a tty (if stdin is a terminal)."""
        if not self.tty:
            yield
            return
        saved = None
        if self.stdin and os.isatty(0):
            saved = termios.tcgetattr(0)
            ttymod.setraw(0, termios.TCSANOW)  # keep what was typed ahead
        previous: Any = None
        main = threading.current_thread() is threading.main_thread()
        if main:
            def winch(_signum: int, _frame: FrameType | None) -> None:
                self.resize()

            previous = signal.signal(signal.SIGWINCH, winch)
        try:
            yield
        finally:
            if main:
                signal.signal(signal.SIGWINCH, previous if previous is not None else signal.SIG_DFL)
            if saved is not None:
                termios.tcsetattr(0, termios.TCSADRAIN, saved)


def stream(responses: Iterable[Any], show: bool = True) -> tuple[int | None, bool]:
    """Copy output to our stdout/stderr (none when not ``show``: ``run -a stdin``);
    (the exit code or None, whether we detached)."""
    for resp in responses:
        part = resp.WhichOneof("part")
        if part == "output":
            if show:
                attach.write_entry(resp.output)
        elif part == "exit":
            return resp.exit.exit_code, False
        elif part == "detached":
            return None, True
    return None, False


def run_session(inp: Input, open_stream: Callable[[Iterator[Any]], Any],
                proxy: Callable[[], contextlib.AbstractContextManager[None]]) -> tuple[int | None, bool]:
    """Open the stream with ``inp``'s requests and copy its output; raw mode restored on every exit."""
    responses = open_stream(inp.requests())
    try:
        with inp.terminal(), proxy():
            return stream(responses)
    finally:
        inp.close()
        responses.cancel()
        sys.stdout.flush()


def check_tty(stdin: bool, tty: bool) -> None:
    """As Docker: ``-it`` needs a terminal on stdin."""
    if stdin and tty and not os.isatty(0):
        raise exits.CLIError("the input device is not a TTY", exits.FAILED)


def detached_message() -> None:
    print("read escape sequence", file=sys.stderr)


# --- skiff attach ------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "attach", cmd_attach, "Attach local standard input, output, and error streams to a "
                    "running container", usage="skiff attach [OPTIONS] CONTAINER")
    p.add_argument("--detach-keys", default="", type=check_detach_keys,
                   help="override the key sequence for detaching a container")
    p.add_argument("--no-stdin", action="store_true", help="do not attach STDIN")
    p.add_argument("--sig-proxy", type=parse_bool, default=True, metavar="BOOL",
                   help="proxy all received signals to the process (default true)")
    p.add_argument("container", metavar="CONTAINER")


def container_input(container: str, config: Any, *, stdin: bool, detach_keys: str, logs: bool,
                    await_start: bool = False) -> Input:
    from skiff.api.v1 import api_pb2

    use_stdin = stdin and config.open_stdin
    opts = api_pb2.AttachOptions(container=container, stdin=use_stdin, stdout=True, stderr=True, logs=logs,
                                 detach_keys=detach_keys, await_start=await_start)
    return Input(api_pb2.AttachContainerRequest(options=opts), api_pb2.AttachContainerRequest,
                 stdin=use_stdin, tty=config.tty)


def cmd_attach(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2
    from skiff.types.v1 import types_pb2

    with client.translated():
        c = client.containers.InspectContainer(api_pb2.InspectContainerRequest(container=args.container),
                                               timeout=60).container
    if c.state.status not in (types_pb2.CONTAINER_STATUS_RUNNING, types_pb2.CONTAINER_STATUS_PAUSED):
        raise exits.CLIError("You cannot attach to a stopped container, start it first", exits.FAILED)
    if c.state.status == types_pb2.CONTAINER_STATUS_PAUSED:
        raise exits.CLIError("You cannot attach to a paused container, unpause it first", exits.FAILED)
    inp = container_input(c.id, c.config, stdin=not args.no_stdin, detach_keys=args.detach_keys, logs=False)
    check_tty(inp.stdin, inp.tty)
    with client.translated():
        code, detached = run_session(inp, client.containers.AttachContainer,
                                     lambda: attach.signal_proxy(client, c.id, args.sig_proxy and not inp.tty))
    if detached:
        detached_message()
        return 0
    if code is None:  # the stream ended early (gateway restarted?): ask for the status
        with client.translated():
            resp = client.containers.WaitContainer(
                api_pb2.WaitContainerRequest(container=c.id, condition=api_pb2.WAIT_CONDITION_NOT_RUNNING))
        code = resp.exit_code
    return code
