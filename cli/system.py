"""``skiff version`` and ``skiff info``: the engine as a whole."""

from __future__ import annotations

import argparse
import platform
import sys
from typing import TYPE_CHECKING

from skiff.cli import format as fmt
from skiff.cli.args import add_command

if TYPE_CHECKING:
    from skiff.cli.client import Client

_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "version", cmd_version, "Show the skiff version information")
    p.add_argument("-f", "--format", default="", help="format the output using a Go template "
                   "(e.g. '{{.Server.Version}}', '{{json .}}')")
    p = add_command(sub, "info", cmd_info, "Display system-wide information")
    p.add_argument("-f", "--format", default="", help="format the output using a Go template "
                   "(e.g. '{{.ServerVersion}}', '{{json .}}')")


def _rows(rows: list[tuple[str, str]], indent: str) -> str:
    width = max(len(k) for k, _ in rows) + 2
    return "".join(f"{indent}{(k + ':').ljust(width)}{v}\n" for k, v in rows)


def cmd_version(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2
    from skiff.cli.client import client_version

    arch = _GOARCH.get(platform.machine(), platform.machine())
    client_rows = [
        ("Version", client_version()),
        ("API version", "v1"),
        ("Python version", platform.python_version()),
        ("OS/Arch", f"{sys.platform}/{arch}"),
    ]
    template = getattr(args, "format", "")
    if not template:
        sys.stdout.write("Client:\n" + _rows(client_rows, " "))
        sys.stdout.flush()
    with client.translated():
        ver = client.system.GetVersion(api_pb2.GetVersionRequest(), timeout=30)
    built = ""
    if ver.HasField("build_time") and ver.build_time.seconds:
        built = ver.build_time.ToDatetime().strftime("%a %b %e %H:%M:%S %Y")
    if template:  # Docker's `version --format` fields
        from skiff.cli.inspect import render

        doc = {"Client": {"Version": client_version(), "ApiVersion": "v1", "PythonVersion": platform.python_version(),
                          "Os": sys.platform, "Arch": arch},
               "Server": {"Version": ver.version, "ApiVersion": ver.api_version, "PythonVersion": ver.runtime_version,
                          "GitCommit": ver.git_commit, "BuildTime": built, "Os": ver.os, "Arch": ver.arch,
                          "KernelVersion": ver.kernel_version}}
        print(render(template, doc))
        return 0
    server_rows = [
        ("Version", ver.version),
        ("API version", ver.api_version),
        ("Python version", ver.runtime_version),
        ("Git commit", ver.git_commit),
        ("Built", built),
        ("OS/Arch", f"{ver.os}/{ver.arch}"),
        ("Kernel Version", ver.kernel_version),
    ]
    sys.stdout.write("\nServer:\n Engine:\n" + _rows(server_rows, "  "))
    return 0


def cmd_info(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2
    from skiff.cli.client import client_version

    with client.translated():
        info = client.system.GetInfo(api_pb2.GetInfoRequest(), timeout=30)
    if getattr(args, "format", ""):  # Docker's `info --format` field names
        from skiff.cli.inspect import render

        doc = {"Containers": info.containers, "ContainersRunning": info.containers_running,
               "ContainersPaused": info.containers_paused, "ContainersStopped": info.containers_stopped,
               "Images": info.images, "ServerVersion": info.server_version, "Driver": info.storage_driver,
               "CgroupVersion": info.cgroup_version.removeprefix("v"), "KernelVersion": info.kernel_version,
               "OperatingSystem": info.operating_system, "NCPU": info.cpus, "MemTotal": info.memory_bytes,
               "Name": info.name, "DockerRootDir": info.data_root, "ExecRootDir": info.exec_root,
               "Debug": args.debug}
        print(render(args.format, doc))
        return 0
    lines = [
        "Client:",
        f" Version:    {client_version()}",
        f" Debug Mode: {str(args.debug).lower()}",
        "",
        "Server:",
        f" Containers: {info.containers}",
        f"  Running: {info.containers_running}",
        f"  Paused: {info.containers_paused}",
        f"  Stopped: {info.containers_stopped}",
        f" Images: {info.images}",
        f" Server Version: {info.server_version}",
        f" Storage Driver: {info.storage_driver}",
        f" Cgroup Version: {info.cgroup_version.removeprefix('v')}",
        f" Kernel Version: {info.kernel_version}",
        f" Operating System: {info.operating_system}",
        f" CPUs: {info.cpus}",
        f" Total Memory: {fmt.bytes_size(info.memory_bytes)}",
        f" Name: {info.name}",
        f" Skiff Root Dir: {info.data_root}",
        f" Exec Root Dir: {info.exec_root}",
    ]
    print("\n".join(lines))
    return 0
