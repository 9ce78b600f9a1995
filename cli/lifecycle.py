"""Lifecycle commands (pause, unpause, top, stats, restart, rename, port, update) and the
resource/security flags of create/run, with Docker's wording."""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from skiff.cli import exits
from skiff.cli import format as fmt
from skiff.cli.args import add_command

if TYPE_CHECKING:
    from skiff.cli.client import Client
    from skiff.types.v1 import types_pb2


# --- create/run flags ------------------------------------------------------------


def add_run_flags(p: argparse.ArgumentParser) -> None:
    _add_resource_flags(p)
    p.add_argument("--cap-add", action="append", default=[], help="add Linux capabilities")
    p.add_argument("--cap-drop", action="append", default=[], help="drop Linux capabilities")
    p.add_argument("--privileged", action="store_true", help="give extended privileges to this container")
    p.add_argument("--security-opt", action="append", default=[], help="security options")
    p.add_argument("--read-only", action="store_true", help="mount the container's root filesystem as read only")
    p.add_argument("--tmpfs", action="append", default=[], metavar="PATH[:OPTIONS]", help="mount a tmpfs directory")
    p.add_argument("--shm-size", default=None, help="size of /dev/shm (default 64m)")
    p.add_argument("--ulimit", action="append", default=[], metavar="NAME=SOFT[:HARD]", help="ulimit options")
    p.add_argument("--sysctl", action="append", default=[], metavar="KEY=VALUE", help="sysctl options")


def _add_resource_flags(p: argparse.ArgumentParser, update: bool = False) -> None:
    p.add_argument("--cpus", default=None, help="number of CPUs")
    p.add_argument("-c", "--cpu-shares", type=int, default=0, help="CPU shares (relative weight)")
    p.add_argument("--cpuset-cpus", default="", help="CPUs in which to allow execution (0-3, 0,1)")
    p.add_argument("--memory-swap", default=None,
                   help="swap limit equal to memory plus swap: '-1' to enable unlimited swap")
    p.add_argument("--memory-reservation", default=None, help="memory soft limit")
    p.add_argument("--blkio-weight", type=int, default=0, help="block IO (relative weight), between 10 and 1000")
    p.add_argument("--restart", default="" if update else "no", help='restart policy (default "no")')


def _size(text: str | None, flag: str, allow_unlimited: bool = False) -> int:
    if text is None or text == "":
        return 0
    if allow_unlimited and text == "-1":
        return -1
    try:
        return fmt.parse_ram(text)
    except ValueError as err:
        raise exits.Usage(f'invalid argument "{text}" for "{flag}" flag: {err}') from None


def _nano_cpus(text: str | None) -> int:
    if not text:
        return 0
    try:
        value = float(text)
    except ValueError:
        raise exits.Usage(
            f'invalid argument "{text}" for "--cpus" flag: failed to parse {text} as a rational number') from None
    return round(value * 1e9)


def parse_restart(text: str) -> types_pb2.RestartPolicy:
    from skiff.types.v1 import types_pb2

    name, _, count = text.partition(":")
    if name not in ("", "no", "on-failure", "always", "unless-stopped"):
        raise exits.Usage(f"invalid restart policy format: {text}")
    if count and (name != "on-failure" or not count.isdigit()):
        raise exits.Usage(f"invalid restart policy format: {text}")
    return types_pb2.RestartPolicy(name=name, maximum_retry_count=int(count or 0))


def parse_ulimit(text: str) -> types_pb2.Ulimit:
    from skiff.types.v1 import types_pb2

    name, sep, value = text.partition("=")
    soft, _, hard = value.partition(":")
    try:
        s = int(soft)
        h = int(hard) if hard else s
    except ValueError:
        raise exits.Usage(f'invalid argument "{text}" for "--ulimit" flag: invalid ulimit argument: {text}') from None
    if not sep or not name:
        raise exits.Usage(f'invalid argument "{text}" for "--ulimit" flag: invalid ulimit argument: {text}')
    return types_pb2.Ulimit(name=name, soft=s, hard=h)


def _security_opts(items: list[str]) -> list[str]:
    """``seccomp=<file>`` becomes the file's contents, as Docker's client sends it."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if key == "seccomp" and sep and value != "unconfined":
            try:
                with open(value) as f:
                    value = f.read()
            except OSError as err:
                raise exits.Usage(f'invalid argument "{item}" for "--security-opt" flag: '
                                  f"opening seccomp profile ({value}) failed: {err.strerror}") from None
            item = f"seccomp={value}"
        out.append(item)
    return out


def _resources(host: types_pb2.HostConfig, args: argparse.Namespace) -> None:
    host.nano_cpus = _nano_cpus(args.cpus)
    host.cpu_shares = args.cpu_shares
    host.cpuset_cpus = args.cpuset_cpus
    host.memory_swap = _size(args.memory_swap, "--memory-swap", allow_unlimited=True)
    host.memory_reservation = _size(args.memory_reservation, "--memory-reservation")
    host.blkio_weight = args.blkio_weight
    if args.restart:
        host.restart_policy.CopyFrom(parse_restart(args.restart))


def apply_run_flags(host: types_pb2.HostConfig, args: argparse.Namespace) -> None:
    _resources(host, args)
    if host.auto_remove and host.restart_policy.name not in ("", "no"):
        raise exits.Usage("Conflicting options: --restart and --rm")
    host.cap_add.extend(args.cap_add)
    host.cap_drop.extend(args.cap_drop)
    host.privileged = args.privileged
    host.security_opt.extend(_security_opts(args.security_opt))
    host.readonly_rootfs = args.read_only
    for item in args.tmpfs:
        path, _, opts = item.partition(":")
        host.tmpfs[path] = opts
    host.shm_size = _size(args.shm_size, "--shm-size")
    host.ulimits.extend(parse_ulimit(u) for u in args.ulimit)
    for item in args.sysctl:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise exits.Usage(f'invalid argument "{item}" for "--sysctl" flag: sysctl \'{item}\' is not allowed')
        host.sysctls[key] = value


# --- commands ----------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "pause", cmd_pause, "Pause all processes within one or more containers")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p = add_command(sub, "unpause", cmd_unpause, "Unpause all processes within one or more containers")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p = add_command(sub, "top", cmd_top, "Display the running processes of a container")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("ps_options", nargs=argparse.REMAINDER, metavar="[ps OPTIONS]")
    p = add_command(sub, "stats", cmd_stats, "Display a live stream of container(s) resource usage statistics")
    p.add_argument("-a", "--all", action="store_true", help="show all containers (default shows just running)")
    p.add_argument("--no-stream", action="store_true", help="disable streaming stats and only pull the first result")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate output")
    p.add_argument("containers", nargs="*", metavar="CONTAINER")
    p = add_command(sub, "restart", cmd_restart, "Restart one or more containers")
    p.add_argument("-t", "--time", "--timeout", dest="timeout", type=int, default=None,
                   help="seconds to wait before killing the container")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p = add_command(sub, "rename", cmd_rename, "Rename a container")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("new_name", metavar="NEW_NAME")
    p = add_command(sub, "port", cmd_port, "List port mappings or a specific mapping for the container")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("private_port", nargs="?", metavar="PRIVATE_PORT[/PROTO]")
    p = add_command(sub, "update", cmd_update, "Update configuration of one or more containers")
    _add_resource_flags(p, update=True)
    p.add_argument("-m", "--memory", default=None, help="memory limit")
    p.add_argument("--pids-limit", type=int, default=0, help="tune container pids limit (-1 for unlimited)")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")


def _each(client: Client, names: list[str], call: Any) -> int:
    from skiff.cli.containers import _each as each

    return each(client, names, call)


def cmd_pause(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2

    def pause(name: str) -> str:
        client.containers.PauseContainer(api_pb2.PauseContainerRequest(container=name), timeout=60)
        return name

    return _each(client, args.containers, pause)


def cmd_unpause(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2

    def unpause(name: str) -> str:
        client.containers.UnpauseContainer(api_pb2.UnpauseContainerRequest(container=name), timeout=60)
        return name

    return _each(client, args.containers, unpause)


def cmd_restart(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2

    def restart(name: str) -> str:
        req = api_pb2.RestartContainerRequest(container=name)
        if args.timeout is not None:
            req.timeout_seconds = args.timeout
        client.containers.RestartContainer(req, timeout=max(args.timeout or 10, 0) + 90)
        return name

    return _each(client, args.containers, restart)


def cmd_rename(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2

    with client.translated():
        client.containers.RenameContainer(
            api_pb2.RenameContainerRequest(container=args.container, new_name=args.new_name), timeout=60)
    return 0


def cmd_top(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2

    with client.translated():
        procs = client.containers.TopContainer(api_pb2.TopContainerRequest(container=args.container),
                                               timeout=60).processes
    sys.stdout.write(fmt.table(list(procs.titles), [list(r.fields) for r in procs.processes]))
    return 0


def cmd_port(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2

    with client.translated():
        c = client.containers.InspectContainer(api_pb2.InspectContainerRequest(container=args.container),
                                               timeout=60).container
    bindings = [(f"{p.container_port}/{p.protocol or 'tcp'}", f"{p.host_ip or '0.0.0.0'}:{p.host_port}")
                for p in c.network_settings.ports if p.host_port]
    if args.private_port:
        port, _, proto = args.private_port.partition("/")
        key = f"{port}/{proto or 'tcp'}"
        found = [addr for k, addr in bindings if k == key]
        if not found:
            print(f"Error: No public port '{key}' published for {args.container}", file=sys.stderr)
            return exits.FAILED
        print("\n".join(found))
        return 0
    for k, addr in bindings:
        print(f"{k} -> {addr}")
    return 0


def cmd_update(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2
    from skiff.cli.runopts import parse_memory
    from skiff.types.v1 import types_pb2

    host = types_pb2.HostConfig(memory_bytes=parse_memory(args.memory), pids_limit=args.pids_limit)
    _resources(host, args)
    if args.pids_limit < 0:
        host.pids_limit = -1

    def update(name: str) -> str:
        client.containers.UpdateContainer(api_pb2.UpdateContainerRequest(container=name, host_config=host),
                                          timeout=60)
        return name

    return _each(client, args.containers, update)


# --- stats -------------------------------------------------------------------------

STATS_HEADER = ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"]


def cpu_percent(s: types_pb2.ContainerStats) -> float:
    """Docker's calculateCPUPercentUnix: the container's share of the host's CPU time since the last sample."""
    cpu = s.cpu_usage_ns - s.pre_cpu_usage_ns
    system = s.system_cpu_usage_ns - s.pre_system_cpu_usage_ns
    if s.pre_system_cpu_usage_ns == 0 or system <= 0 or cpu < 0:
        return 0.0
    return cpu / system * (s.online_cpus or 1) * 100.0


def stats_row(s: types_pb2.ContainerStats, no_trunc: bool = False) -> list[str]:
    mem_pct = s.memory_usage / s.memory_limit * 100.0 if s.memory_limit else 0.0
    return [
        s.id if no_trunc else fmt.short_id(s.id),
        s.name or "--",
        f"{cpu_percent(s):.2f}%",
        f"{fmt.bytes_size(s.memory_usage)} / {fmt.bytes_size(s.memory_limit)}",
        f"{mem_pct:.2f}%",
        f"{fmt.human_size(s.net_rx_bytes)} / {fmt.human_size(s.net_tx_bytes)}",
        f"{fmt.human_size(s.block_read_bytes)} / {fmt.human_size(s.block_write_bytes)}",
        str(s.pids),
    ]


def _stats_targets(client: Client, args: argparse.Namespace) -> list[str]:
    from skiff.api.v1 import api_pb2

    if args.containers:
        return list(args.containers)
    with client.translated():
        found = client.containers.ListContainers(api_pb2.ListContainersRequest(all=args.all), timeout=60).containers
    return [c.id for c in found]


def cmd_stats(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2

    names = _stats_targets(client, args)
    if args.no_stream:
        rows = []
        with client.translated():
            for name in names:
                for resp in client.containers.ContainerStats(
                        api_pb2.ContainerStatsRequest(container=name, stream=False), timeout=60):
                    rows.append(stats_row(resp.stats, args.no_trunc))
        sys.stdout.write(fmt.table(STATS_HEADER, rows))
        return 0
    latest: dict[str, types_pb2.ContainerStats] = {}
    failures: list[BaseException] = []
    calls = []

    def follow(name: str, call: Any) -> None:
        try:
            for resp in call:
                latest[name] = resp.stats
        except Exception as err:  # cancelled at exit, or the container went away
            failures.append(err)

    for name in names:
        call = client.containers.ContainerStats(api_pb2.ContainerStatsRequest(container=name, stream=True))
        calls.append(call)
        threading.Thread(target=follow, args=(name, call), daemon=True).start()
    try:
        while True:
            time.sleep(1.0)
            rows = [stats_row(latest[n], args.no_trunc) for n in names if n in latest]
            out = fmt.table(STATS_HEADER, rows)
            if os.isatty(sys.stdout.fileno()):
                out = "\033[2J\033[H" + out
            sys.stdout.write(out)
            sys.stdout.flush()
            if names and len(failures) == len(names):
                return 0
    finally:
        for call in calls:
            call.cancel()
