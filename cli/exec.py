"""`skiff exec`: run a command in a running container (ExecContainer).

As Docker: the output is copied to our stdout/stderr, the command's exit code is
ours; 126/127 when it cannot be invoked / is not found; 1 for other failures.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from skiff.cli import attach, exits, interactive, runopts
from skiff.cli.args import add_command

if TYPE_CHECKING:
    from skiff.api.v1 import api_pb2
    from skiff.cli.client import Client


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "exec", cmd_exec, "Execute a command in a running container",
                    usage="skiff exec [OPTIONS] CONTAINER COMMAND [ARG...]")
    p.add_argument("-d", "--detach", action="store_true", help="detached mode: run command in the background")
    p.add_argument("-e", "--env", action="append", default=[], metavar="KEY[=VALUE]",
                   help="set environment variables")
    p.add_argument("-u", "--user", default="", help="username or UID (format: <name|uid>[:<group|gid>])")
    p.add_argument("-w", "--workdir", default="", help="working directory inside the container")
    p.add_argument("-i", "--interactive", action="store_true", help="keep STDIN open even if not attached")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-TTY")
    p.add_argument("--privileged", action="store_true", help="give extended privileges to the command")
    p.add_argument("--detach-keys", default="", type=interactive.check_detach_keys,
                   help="override the key sequence for detaching a container")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND [ARG...]")


def requests(args: argparse.Namespace) -> Iterator[api_pb2.ExecContainerRequest]:
    from skiff.api.v1 import api_pb2

    opts = api_pb2.ExecOptions(
        container=args.container, cmd=args.command, env=runopts.expand_env(args.env, os.environ),
        user=args.user, working_dir=args.workdir, detach=args.detach, tty=args.tty, stdin=args.interactive,
        detach_keys=args.detach_keys, privileged=args.privileged,
    )
    size = interactive.terminal_size() if args.tty else None
    if size is not None:
        opts.console_size.rows, opts.console_size.cols = size
    yield api_pb2.ExecContainerRequest(options=opts)


def cmd_exec(client: Client, args: argparse.Namespace) -> int:
    from skiff.common.errors import SkiffError

    if not args.command:
        raise exits.Usage('"skiff exec" requires at least 2 arguments.')
    interactive_session = (args.interactive or args.tty) and not args.detach
    if interactive_session:
        interactive.check_tty(args.interactive, args.tty)
    try:
        with client.translated():
            if interactive_session:
                from skiff.api.v1 import api_pb2

                inp = interactive.Input(next(requests(args)), api_pb2.ExecContainerRequest,
                                        stdin=args.interactive, tty=args.tty)
                code, detached = interactive.run_session(inp, client.containers.ExecContainer,
                                                         contextlib.nullcontext)
                if detached:
                    interactive.detached_message()
                    return 0
            else:
                code = attach.stream_output(client.containers.ExecContainer(requests(args)))
    except SkiffError as err:
        if err.reason in exits.START_FAILURES:
            print(f"OCI runtime exec failed: {err.message}: unknown", file=sys.stderr)
            return exits.START_FAILURES[err.reason]
        raise
    if code is None:
        raise exits.CLIError("the exec stream ended without an exit status")
    return code
