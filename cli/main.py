"""``skiff``: the command-line client. Global flags, dispatch, exit statuses.

Like Docker's client it talks only to the gateway (apiserver). Nothing here
imports grpc: the command modules load it when a command actually calls the
engine, so ``skiff --help`` and usage errors answer at once.

Exit statuses follow Docker: 0 success; 1 an engine or client failure; 2 a
usage error; for ``run``/``create``/``start`` 125 when the engine fails (usage
errors included), 126/127 when the command cannot be executed / is not found,
otherwise the container's own exit status.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from skiff.cli import (
    containers,
    exits,
    images,
    imagetools,
    inspect,
    interactive,
    lifecycle,
    networks,
    prune,
    system,
)
from skiff.cli import cp as cp_cmd
from skiff.cli import events as events_cmd
from skiff.cli import exec as exec_cmd
from skiff.cli import volumes as volumes_cmd
from skiff.cli.args import Parser
from skiff.cli.client import DEFAULT_HOST, Client, Options, client_version

#: Global flags that take a value (to find where the command starts).
_VALUED = {"-H", "--host", "-l", "--log-level", "--tlscacert", "--tlscert", "--tlskey"}
_DAEMON_FLAGS = {"-d", "--daemon"}


class _VersionAction(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(f"skiff version {client_version()}")
        parser.exit(0)


def build_parser() -> Parser:
    parser = Parser(
        prog="skiff",
        description="A self-sufficient runtime for containers.",
        usage="skiff [OPTIONS] COMMAND [ARG...]",
    )
    parser.add_argument("-H", "--host", default=os.environ.get("SKIFF_HOST") or DEFAULT_HOST,
                        help="daemon socket to connect to: unix:///path or tcp://host:port "
                        "(default $SKIFF_HOST or %(default)s)")
    parser.add_argument("-D", "--debug", action="store_true", help="enable debug mode (tracebacks)")
    parser.add_argument("-l", "--log-level", default="info",
                        choices=["debug", "info", "warn", "error", "fatal"], help="logging level")
    parser.add_argument("--tls", action="store_true", help="use TLS; implied by --tlsverify and tcp://")
    parser.add_argument("--tlsverify", action="store_true",
                        default=bool(os.environ.get("SKIFF_TLS_VERIFY")), help="use TLS and verify the remote")
    parser.add_argument("--tlscacert", help="trust certs signed only by this CA (default ~/.skiff/ca.pem)")
    parser.add_argument("--tlscert", help="TLS certificate file (default ~/.skiff/cert.pem)")
    parser.add_argument("--tlskey", help="TLS key file (default ~/.skiff/key.pem)")
    parser.add_argument("-v", "--version", action=_VersionAction, nargs=0,
                        help="print version information and quit")
    parser.add_argument("-d", "--daemon", action="store_true",
                        help="run the daemon (skiffd) with the arguments that follow")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    system.register(sub)
    images.register(sub)
    containers.register(sub)
    lifecycle.register(sub)
    exec_cmd.register(sub)
    interactive.register(sub)
    inspect.register(sub)
    networks.register(sub)
    imagetools.register(sub)
    volumes_cmd.register(sub)
    cp_cmd.register(sub)
    prune.register(sub)
    events_cmd.register(sub)
    sub.add_parser("daemon", help="run the daemon (skiffd)", add_help=False)
    return parser


def _daemon_argv(argv: Sequence[str]) -> list[str] | None:
    """The arguments for skiffd if this is ``skiff -d ...`` or ``skiff daemon ...``."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _DAEMON_FLAGS:
            return [*argv[:i], *argv[i + 1 :]]
        if arg == "daemon":
            return list(argv[i + 1 :])
        if not arg.startswith("-") or arg == "--":
            return None
        i += 2 if arg in _VALUED else 1
    return None


def run_daemon(argv: list[str]) -> int:
    from skiff.supervisor.main import main as skiffd

    return int(skiffd(argv) or 0)


def _see_help(prog: str) -> str:
    return f"See '{prog} --help'."


def _report(args: argparse.Namespace, message: str, run_like: bool) -> None:
    """Docker's two styles: plain for most commands, ``skiff: ….`` + help hint for run."""
    if run_like:
        text = message if message.endswith(("?", ".")) else message + "."
        print(f"skiff: {text}\n{_see_help(args.prog)}", file=sys.stderr)
    else:
        print(message, file=sys.stderr)


def dispatch(args: argparse.Namespace) -> int:
    """Run the chosen command; map every failure to a message and a status."""
    run_like: bool = getattr(args, "run_like", False)
    engine_exit = exits.ENGINE_FAILED if run_like else exits.FAILED
    client = Client(Options(host=args.host, debug=args.debug, tls=args.tls, tlsverify=args.tlsverify,
                            tlscacert=args.tlscacert, tlscert=args.tlscert, tlskey=args.tlskey))
    try:
        return int(args.func(client, args))
    except exits.Usage as err:
        print(f"skiff: {err.message}\n{_see_help(err.prog or args.prog)}", file=sys.stderr)
        return err.code if err.code is not None else (engine_exit if run_like else exits.USAGE)
    except exits.DaemonUnreachable as err:
        if args.debug and err.detail:
            print(f"debug: {err.detail}", file=sys.stderr)
        _report(args, err.message, run_like)
        return engine_exit
    except exits.CLIError as err:
        _report(args, err.message, run_like)
        return err.code if err.code is not None else engine_exit
    except KeyboardInterrupt:
        return exits.INTERRUPTED
    except BrokenPipeError:
        return exits.FAILED
    except Exception as err:
        errors = sys.modules.get("skiff.common.errors")
        if errors is None or not isinstance(err, errors.SkiffError):
            if args.debug:
                raise
            print(f"skiff: unexpected error: {type(err).__name__}: {err}", file=sys.stderr)
            return exits.FAILED
        if args.debug:
            print(f"debug: {type(err).__name__} reason={err.reason} metadata={err.metadata}", file=sys.stderr)
        _report(args, f"Error response from daemon: {err.message}", run_like)
        if run_like:
            return exits.START_FAILURES.get(err.reason, exits.ENGINE_FAILED)
        return exits.FAILED
    finally:
        client.close()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    daemon = _daemon_argv(argv)
    if daemon is not None:
        return run_daemon(daemon)
    parser = build_parser()
    try:
        argv = prune.management_argv(argv)  # `container ls` is `ps`, `image rm` is `rmi`, ...
        args, extra = parser.parse_known_args(argv)
        if extra:
            # parse_known_args leaves unknown flags to the top parser: blame the command.
            chosen = getattr(args, "parser", parser)
            flag = next((e for e in extra if e.startswith("-")), None)
            chosen.error(f"unknown flag: {flag}" if flag else f"unexpected arguments: {' '.join(extra)}")
    except exits.Usage as err:
        prog = err.prog or "skiff"
        print(f"skiff: {err.message}\n{_see_help(prog)}", file=sys.stderr)
        return err.code if err.code is not None else exits.USAGE
    except SystemExit as err:  # --help, --version
        return err.code if isinstance(err.code, int) else 0
    if args.command is None:
        parser.print_help()
        return 0
    level = "debug" if args.debug else args.log_level
    logging.basicConfig(level={"warn": "WARNING", "fatal": "CRITICAL"}.get(level, level.upper()),
                        format="%(levelname)s %(name)s: %(message)s")
    return dispatch(args)


if __name__ == "__main__":
    sys.exit(main())
