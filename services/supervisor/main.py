"""skiffd: the supervisor. Starts graphsvc, execsvc, netsvc and apiserver and keeps them up.

Also run as ``skiff -d …``. Under systemd, the units in deploy/systemd do the same
job one service per unit; skiffd is for hosts without systemd and for development.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import uuid
from pathlib import Path

from skiff.common import address
from skiff.common.errors import SkiffError
from skiff.common.server import setup_logging
from skiff.common.tls import TLSFiles
from skiff.supervisor import process, zygote
from skiff.supervisor.pidfile import PidFile
from skiff.supervisor.supervisor import ServiceSpec, Supervisor

log = logging.getLogger("skiffd")

#: Start order; stop order is the reverse.
BACKENDS = ("graphsvc", "execsvc", "netsvc")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="skiffd", description="skiff daemon: runs and supervises the services")
    p.add_argument("-D", "--debug", action="store_true", help="debug logging (same as -l debug)")
    p.add_argument("-l", "--log-level", default="info",
                   choices=["debug", "info", "warn", "warning", "error", "fatal"])
    p.add_argument("-H", "--host", dest="hosts", action="append", metavar="ADDR",
                   help=f"address for the public API (repeatable; default {address.DEFAULT_HOST})")
    p.add_argument("--data-root", type=Path, default=Path("/var/lib/skiff"))
    p.add_argument("--exec-root", type=Path, default=Path("/run/skiff"))
    p.add_argument("--tlscacert", type=Path)
    p.add_argument("--tlscert", type=Path)
    p.add_argument("--tlskey", type=Path)
    p.add_argument("--pidfile", type=Path, help="default <exec-root>/skiffd.pid")
    p.add_argument("--bip", default="", metavar="CIDR", help="the bridge's subnet (passed to netsvc)")
    p.add_argument("-b", "--bridge", default="", metavar="NAME", help="the bridge's name (passed to netsvc)")
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]|CIDR",
                   help="a registry reached over https without certificate checks or plain http (to graphsvc)")
    p.add_argument("--registry-mirror", action="append", default=[], metavar="URL",
                   help="a Docker Hub mirror, tried before the hub (passed to graphsvc)")
    p.add_argument("--log-driver", default="", help="default log driver of containers (json-file or none)")
    p.add_argument("--userns-remap", default="", metavar="USER[:GROUP]",
                   help="map containers' root to a subordinate id range (passed to execsvc)")
    p.add_argument("--log-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="default log driver options (max-size, max-file)")
    args = p.parse_args(argv)
    args.hosts = args.hosts or [address.DEFAULT_HOST]
    args.pidfile = args.pidfile or args.exec_root / "skiffd.pid"
    return args


def build_specs(args: argparse.Namespace, python: str = sys.executable) -> list[ServiceSpec]:
    """The four services' command lines, in start order."""
    level = "debug" if args.debug else args.log_level
    common = ["--data-root", str(args.data_root), "--exec-root", str(args.exec_root), "-l", level]
    sock = {name: f"unix://{args.exec_root}/{name}.sock" for name in BACKENDS}
    specs = [ServiceSpec(name, [python, "-m", f"skiff.{name}", "-H", sock[name], *common], sock[name])
             for name in BACKENDS]
    if getattr(args, "userns_remap", ""):
        next(s for s in specs if s.name == "execsvc").argv.extend(["--userns-remap", args.userns_remap])
    net = next(s for s in specs if s.name == "netsvc")
    for flag, value in (("--bip", getattr(args, "bip", "")), ("--bridge", getattr(args, "bridge", ""))):
        if value:
            net.argv.extend([flag, value])
    graph = next(s for s in specs if s.name == "graphsvc")
    for flag, values in (("--insecure-registry", getattr(args, "insecure_registry", [])),
                         ("--registry-mirror", getattr(args, "registry_mirror", []))):
        for value in values:
            graph.argv.extend([flag, value])
    api = [python, "-m", "skiff.apiserver"]
    for host in args.hosts:
        api += ["-H", host]
    for name in BACKENDS:
        api += [f"--{name}", sock[name]]
    api += common
    if getattr(args, "log_driver", ""):
        api += ["--log-driver", args.log_driver]
    for opt in getattr(args, "log_opt", None) or []:
        api += ["--log-opt", opt]
    # New at every skiffd start: `always` containers the user stopped come back under a new daemon.
    api += ["--daemon-id", getattr(args, "daemon_id", "") or f"skiffd-{uuid.uuid4().hex}"]
    tls = TLSFiles(args.tlscacert, args.tlscert, args.tlskey)
    for flag, path in (("--tlscacert", tls.ca), ("--tlscert", tls.cert), ("--tlskey", tls.key)):
        if path is not None:
            api += [flag, str(path)]
    # Probe a unix address when there is one: it needs no client certificate.
    probe = next((h for h in args.hosts if address.parse(h).scheme == "unix"), args.hosts[0])
    specs.append(ServiceSpec("apiserver", api, probe, tls))
    return specs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging("skiffd", args.log_level, args.debug)
    try:
        for host in args.hosts:
            address.parse(host)
        from skiff.graphsvc.registry import Options

        Options.parse(args.insecure_registry, args.registry_mirror)  # refused here, before any service starts
        pidfile = PidFile(args.pidfile)
        pidfile.acquire()
    except SkiffError as err:
        log.error("%s", err)
        return 1
    spawn = process.spawn
    if zygote.enabled():  # services forked from skiffd, which imports their code once (zygote.py)
        zygote.preload()
        spawn = zygote.Forker(process.spawn).spawn
    try:
        process.become_subreaper()
        supervisor = Supervisor(build_specs(args), spawn=spawn)

        def on_stop(signum: int, _frame: object) -> None:
            log.info("signal %s: stopping", signal.Signals(signum).name)
            supervisor.request_stop()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGCHLD, lambda _s, _f: supervisor.wake())
        return supervisor.run()
    finally:
        pidfile.release()
