"""The `--init` and health-check flags of create/run, with Docker's rules and messages."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from skiff.cli import exits

if TYPE_CHECKING:
    from skiff.types.v1 import types_pb2

def parse_duration(text: str, flag: str) -> int:
    """Go's time.ParseDuration (``1m30s``, ``500ms``, ``0``) in nanoseconds."""
    from skiff.common.durations import parse_duration as parse

    try:
        return parse(text)
    except ValueError as err:
        raise exits.Usage(f'invalid argument "{text}" for "{flag}" flag: {err}') from None


def add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--init", action="store_true",
                   help="run an init inside the container that forwards signals and reaps processes")
    p.add_argument("--health-cmd", default=None, help="command to run to check health")
    p.add_argument("--health-interval", default=None, help="time between running the check (ms|s|m|h) (default 0s)")
    p.add_argument("--health-timeout", default=None,
                   help="maximum time to allow one check to run (ms|s|m|h) (default 0s)")
    p.add_argument("--health-retries", type=int, default=0, help="consecutive failures needed to report unhealthy")
    p.add_argument("--health-start-period", default=None,
                   help="start period for the container to initialize before counting retries (ms|s|m|h)")
    p.add_argument("--no-healthcheck", action="store_true", help="disable any container-specified HEALTHCHECK")
    p.add_argument("--stop-signal", default="", help="signal to stop the container (default SIGTERM)")
    p.add_argument("--stop-timeout", type=int, default=None, help="timeout (in seconds) to stop a container")


def apply_run_flags(config: types_pb2.ContainerConfig, host: types_pb2.HostConfig, args: argparse.Namespace) -> None:
    host.init = args.init
    config.stop_signal = args.stop_signal
    if args.stop_timeout is not None:
        config.stop_timeout = args.stop_timeout
    interval = parse_duration(args.health_interval, "--health-interval") if args.health_interval else 0
    timeout = parse_duration(args.health_timeout, "--health-timeout") if args.health_timeout else 0
    start = parse_duration(args.health_start_period, "--health-start-period") if args.health_start_period else 0
    any_health = args.health_cmd is not None or interval or timeout or start or args.health_retries
    if args.no_healthcheck:
        if any_health:
            raise exits.Usage("--no-healthcheck conflicts with --health-* options")
        config.healthcheck.test[:] = ["NONE"]
        return
    if not any_health:
        return
    if interval < 0 or timeout < 0 or start < 0:
        raise exits.Usage("--health-interval, --health-timeout and --health-start-period cannot be negative")
    for value, flag in ((interval, "--health-interval"), (timeout, "--health-timeout"),
                        (start, "--health-start-period")):
        if 0 < value < 1_000_000:
            raise exits.Usage(f"{flag} cannot be less than 1ms")
    if args.health_retries < 0:
        raise exits.Usage("--health-retries cannot be negative")
    hc = config.healthcheck
    if args.health_cmd:
        hc.test[:] = ["CMD-SHELL", args.health_cmd]
    hc.interval_ns, hc.timeout_ns, hc.start_period_ns, hc.retries = interval, timeout, start, args.health_retries
