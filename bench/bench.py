"""skiff side by side with Docker and Podman, on this machine, in one run.

    make bench                                       # every scenario, every engine found
    make bench BENCH_ARGS=--quick                    # a few repetitions, small counts
    .venv/bin/python bench/bench.py --only 1,4 --engines skiff,docker

Each engine gets its own data root, socket, bridge (name and subnet of its own) and
iptables chains, and everything is taken away afterwards (processes, mounts, bridges,
chains, data). The scenarios (issue 6), the engines interleaved (skiff, docker, podman,
skiff, ...) so that drift on a shared machine hits every engine alike:

  1. `run --rm busybox true` as a user types it (CLI wall time), `--network none` and
     the default bridge;
  2. create + start + wait of `true` through the API from a connected client (skiff:
     gRPC to the gateway; Docker: its HTTP API);
  3. 50 `run --rm --network none busybox true` started at once, until all have exited;
  4. pulling a ~200 MB Debian image (debootstrap --variant=minbase, built once into
     build/, bench/debimage.py) from a local docker-registry on 127.0.0.1 into a store
     without it;
  5. idle PSS of the engine's own processes, and PSS added per running container
     (50 `sleep` containers);
  6. `ps -a` with 1000 created containers, and removing them all (one `rm` command).

Before each timed sample the benchmark waits (at most 2 s) until the CPUs have been
mostly idle and no disk write has completed for 100 ms (`settle`), so that one engine's
leftover background work (a shim exiting, a daemon's clean-up and its fsyncs) is not
billed to the next engine's sample.

Results: a markdown table (median, min-max, ratio skiff/peer) and a PNG chart in
bench/results/, with the machine. If bench/phases.py exists, its per-phase breakdown of
a skiff run is added as a section. `--budget` bounds the run: once it is spent,
each scenario stops after its minimum number of repetitions.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import inspect
import ipaddress
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
IMAGE_TAR = ROOT / "build" / "busybox.tar"
DEBIAN_LAYOUT = ROOT / "build" / "debian-minbase-oci"
RESULTS = ROOT / "bench" / "results"
PODMAN_ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
# Names of the benchmark's own: never skiff0, docker0 or podman0 of a real installation.
BRIDGES = {"skiff": "skbench0", "docker": "skbenchd0", "podman": "skbenchp0"}
# Chains the peers make (and skiff's for its bench bridge, which skiffd removes itself
# unless it died): taken away after the run if they were not there before it.
PEER_CHAIN_PREFIXES = ("DOCKER", "NETAVARK", "CNI-", f"SKIFF-{BRIDGES['skiff'].upper()}")


class Deadline:
    """The run's time budget: past it, loops stop at their minimum repetitions."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def passed(self) -> bool:
        return time.monotonic() > self.end


class Budget:
    """The whole run's time, shared out: each scenario, when it starts, gets its weight's
    share of what is left (so an early slow scenario does not starve the later ones)."""

    WEIGHTS = {"1a": 1.5, "1b": 1.5, "2": 0.5, "3": 3.0, "4": 3.0, "5": 2.0, "6": 5.0}

    def __init__(self, seconds: float, keys: Iterable[str]):
        self.end = time.monotonic() + seconds
        self.left = [k for k in self.WEIGHTS if k in set(keys)]

    def slice(self, key: str) -> Deadline:
        total = sum(self.WEIGHTS[k] for k in self.left) or 1.0
        share = self.WEIGHTS[key] / total
        if key in self.left:
            self.left.remove(key)
        return Deadline(max(0.0, self.end - time.monotonic()) * share)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def pss_kb(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return out


def mounts_under(base: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(base) + "/")]


def unmount_under(base: Path) -> None:
    """Podman (no daemon) and a killed dockerd leave mounts behind: take them away."""
    for _ in range(3):
        points = mounts_under(base)
        if not points:
            return
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_subnets(count: int) -> list[str]:
    """/24s that no route, address or other engine on this host uses."""
    used = []
    for line in subprocess.run(["ip", "-4", "-o", "route", "show", "table", "all"], capture_output=True,
                               text=True).stdout.splitlines():
        word = line.split()[0] if line.split() else ""
        if word in ("local", "broadcast", "unreachable", "blackhole") and len(line.split()) > 1:
            word = line.split()[1]
        try:
            used.append(ipaddress.ip_network(word if word != "default" else "0.0.0.0/32", strict=False))
        except ValueError:
            continue
    out = []
    for third in range(240, 256):
        net = ipaddress.ip_network(f"10.231.{third}.0/24")
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            out.append(str(net))
        if len(out) == count:
            return out
    raise RuntimeError("bench: no free /24 in 10.231.240.0/20 for the bridges")


class Firewall:
    """The peers' iptables chains and rules (Docker's DOCKER*, netavark's NETAVARK*):
    a snapshot before they start, and afterwards every new chain of theirs and every
    rule that jumps to one or names the benchmark's bridges or subnets is deleted,
    and the built-in chains get their policies back. Other rules are left alone (other
    programs may be changing the firewall at the same time)."""

    TOOLS = ("iptables", "ip6tables")

    def __init__(self) -> None:
        self.before = {tool: self._state(tool) for tool in self.TOOLS if shutil.which(tool)}

    @staticmethod
    def _state(tool: str) -> dict[str, tuple[set[str], dict[str, str]]]:
        out = {}
        for table in ("filter", "nat", "mangle", "raw"):
            res = subprocess.run([tool, "-w", "-t", table, "-S"], capture_output=True, text=True)
            if res.returncode:
                continue
            chains, policies = set(), {}
            for line in res.stdout.splitlines():
                w = line.split()
                if w[:1] == ["-N"]:
                    chains.add(w[1])
                elif w[:1] == ["-P"]:
                    policies[w[1]] = w[2]
            out[table] = (chains, policies)
        return out

    def restore(self, words: Iterable[str]) -> list[str]:
        """Undo; returns what it removed (for the log)."""
        marks = set(words)
        removed = []
        for tool, before in self.before.items():
            now = self._state(tool)
            for table, (chains, policies) in now.items():
                old_chains, old_policies = before.get(table, (set(), {}))
                new = {c for c in chains - old_chains if c.startswith(PEER_CHAIN_PREFIXES)}
                rules = subprocess.run([tool, "-w", "-t", table, "-S"], capture_output=True,
                                       text=True).stdout.splitlines()
                for rule in rules:
                    w = shlex.split(rule)
                    if w[:1] != ["-A"] or w[1] in new:
                        continue
                    target = w[w.index("-j") + 1] if "-j" in w else ""
                    if target in new or marks & set(w):
                        subprocess.run([tool, "-w", "-t", table, "-D", *w[1:]], capture_output=True)
                        removed.append(f"{tool} -t {table} {rule}")
                for chain in sorted(new):
                    subprocess.run([tool, "-w", "-t", table, "-F", chain], capture_output=True)
                for chain in sorted(new):
                    subprocess.run([tool, "-w", "-t", table, "-X", chain], capture_output=True)
                    removed.append(f"{tool} -t {table} -X {chain}")
                for chain, policy in old_policies.items():
                    if policies.get(chain) != policy:
                        subprocess.run([tool, "-w", "-t", table, "-P", chain, policy], capture_output=True)
                        removed.append(f"{tool} -t {table} -P {chain} {policy}")
        return removed


class HostPaths:
    """Host-wide places the peers make whatever their data roots are (Podman's IPAM database
    and blob-info cache, Docker's plugin directory, the engines' parent cgroups): those that
    were not there before the run are taken away after it. Cgroups only if empty (rmdir)."""

    FILES = ("/run/containers", "/var/lib/containers", "/var/run/docker")
    CGROUPS = ("docker", "libpod_parent", "skiff-bench-docker", "skiff-bench-podman")

    @classmethod
    def _cgroups(cls) -> list[Path]:
        roots = [p for p in Path("/sys/fs/cgroup").iterdir() if p.is_dir() and not p.is_symlink()]
        return [r / name for r in roots for name in cls.CGROUPS]

    def __init__(self) -> None:
        self.before = {p for p in [*map(Path, self.FILES), *self._cgroups()] if p.exists()}

    def restore(self) -> list[str]:
        removed = []
        for path in map(Path, self.FILES):
            if path.exists() and path not in self.before:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(str(path))
        for cg in self._cgroups():
            if cg.is_dir() and cg not in self.before:
                for sub in sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                                  reverse=True):
                    with contextlib.suppress(OSError):
                        sub.rmdir()
                with contextlib.suppress(OSError):
                    cg.rmdir()
                    removed.append(str(cg))
        return removed


class UnixHTTP(http.client.HTTPConnection):
    """An HTTP API (Docker's, Podman's compatible one) over a unix socket."""

    def __init__(self, path: str):
        super().__init__("localhost", timeout=120)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def http_call(sock: Path, method: str, path: str, body: dict | None = None) -> dict:
    conn = UnixHTTP(str(sock))
    try:
        conn.request(method, path, json.dumps(body) if body is not None else None,
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    if resp.status >= 300:
        raise RuntimeError(f"{method} {path}: {resp.status} {data!r}")
    return json.loads(data) if data else {}


@dataclass
class Engine:
    name: str
    base: Path
    bridge: str = ""
    subnet: str = ""
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    run_opts: list[str] = field(default_factory=list)
    pull_opts: list[str] = field(default_factory=list)
    _log_fds: list[int] = field(default_factory=list)

    def cli(self) -> list[str]:
        raise NotImplementedError

    def argv(self, *args: str) -> list[str]:
        """The CLI command line, with the engine's run options after ``run``/``create``."""
        if args and args[0] in ("run", "create"):
            args = (args[0], *self.run_opts, *args[1:])
        return [*self.cli(), *args]

    def run(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[bytes]:
        res = subprocess.run(self.argv(*args), capture_output=True, env={**os.environ, **self.env}, timeout=timeout)
        if check and res.returncode:
            raise RuntimeError(f"{self.name} {' '.join(args[:3])}: exit {res.returncode}: "
                               f"{res.stderr.decode(errors='replace')[-2000:]}")
        return res

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env={**os.environ, **self.env})

    def start(self) -> None:
        raise NotImplementedError

    def wait_up(self, what: str, timeout: float) -> None:
        def up() -> bool:
            if self.proc and self.proc.poll() is not None:
                tail = (self.base / f"{what}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{what} exited ({self.proc.returncode}):\n{tail}")
            return self.run("version", check=False).returncode == 0

        wait_until(up, timeout, what)

    def log(self, name: str) -> int:
        """A file descriptor for a daemon's log (the child keeps its own copy)."""
        fd = os.open(self.base / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        self._log_fds.append(fd)
        return fd

    def engine_pids(self) -> list[int]:
        """The engine's own processes (not the containers)."""
        return descendants(self.proc.pid) if self.proc else []

    def container_overhead_pids(self) -> list[int]:
        raise NotImplementedError

    def api_run_true(self) -> str:
        """Create + start + wait of ``true`` through the API; the container's id (removed untimed,
        by :meth:`api_remove`)."""
        raise NotImplementedError

    def api_remove(self, cid: str) -> None:
        raise NotImplementedError

    def create_many(self, count: int) -> list[str]:
        """``count`` created (never started) busybox containers, made as fast as the engine allows."""
        raise NotImplementedError

    def all_ids(self) -> list[str]:
        return self.run("ps", "-aq", "--no-trunc").stdout.decode().split()

    def remove_all(self) -> None:
        ids = self.all_ids()
        if ids:
            self.run("rm", "-f", *ids, check=False)

    def clear_image(self, ref: str) -> None:
        """The pulled image and every layer of it gone, as in a store that never had it."""
        self.run("rmi", "-f", ref, check=False)
        self.run("image", "prune", "-f", check=False)

    def store(self) -> Path:
        """Where the engine keeps images and layers."""
        return self.base / "data"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for fd in self._log_fds:
            os.close(fd)
        self._log_fds.clear()


class Skiff(Engine):
    def cli(self) -> list[str]:
        return [str(VENV_BIN / "skiff"), "-H", f"unix://{self.base}/run/skiff.sock"]

    def start(self) -> None:
        # A bridge, chains and cgroup parent of the benchmark's own (tests may be running beside it).
        self.env = {"SKIFF_BRIDGE": self.bridge, "SKIFF_CGROUP_PARENT": f"skiff-bench-{os.getpid()}"}
        argv = [str(VENV_BIN / "skiffd"), "--data-root", str(self.base / "data"), "--exec-root",
                str(self.base / "run"), "-H", f"unix://{self.base}/run/skiff.sock"]
        if self.subnet:
            argv += ["--bip", self.subnet]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self.log("skiffd"),
                                     start_new_session=True, env={**os.environ, **self.env})
        self.wait_up("skiffd", 60)
        self.run("import", str(IMAGE_TAR), "busybox:latest")
        sys.path.insert(0, str(ROOT / "build" / "gen"))
        from skiff.api.v1 import api_pb2, api_pb2_grpc
        from skiff.common.server import channel
        from skiff.types.v1 import types_pb2

        self._pb, self._types = api_pb2, types_pb2
        self._stub = api_pb2_grpc.ContainerServiceStub(channel(f"unix://{self.base}/run/skiff.sock"))

    def _create(self, cmd: list[str]) -> str:
        config = self._types.ContainerConfig(image="busybox")
        config.cmd.values[:] = cmd
        return str(self._stub.CreateContainer(self._pb.CreateContainerRequest(
            config=config, host_config=self._types.HostConfig(network_mode="none")), timeout=120).id)

    def api_run_true(self) -> str:
        pb = self._pb
        cid = self._create(["true"])
        self._stub.StartContainer(pb.StartContainerRequest(container=cid), timeout=60)
        self._stub.WaitContainer(pb.WaitContainerRequest(container=cid), timeout=60)
        return cid

    def api_remove(self, cid: str) -> None:
        self._stub.RemoveContainer(self._pb.RemoveContainerRequest(container=cid, force=True), timeout=60)

    def create_many(self, count: int) -> list[str]:
        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(lambda _: self._create(["true"]), range(count)))

    def engine_pids(self) -> list[int]:
        ctr: set[int] = set()
        for shim in self.container_overhead_pids():
            ctr |= set(descendants(shim))
        return [p for p in descendants(self.proc.pid) if p not in ctr] if self.proc else []

    def container_overhead_pids(self) -> list[int]:
        out = []
        for p in (self.base / "run" / "containers").glob("*/shim.pid"):
            try:
                out.append(int(p.read_text()))
            except (OSError, ValueError):
                continue
        return out

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.remove_all()
        super().stop()
        # skiffd takes its bridge away when it stops; not if it died.
        if self.bridge and Path(f"/sys/class/net/{self.bridge}").exists():
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


class Docker(Engine):
    def cli(self) -> list[str]:
        return ["/usr/bin/docker", "-H", f"unix://{self.base}/docker.sock"]

    def start(self) -> None:
        argv = ["dockerd", "--data-root", str(self.base / "data"), "--exec-root", str(self.base / "exec"),
                "--pidfile", str(self.base / "docker.pid"), "-H", f"unix://{self.base}/docker.sock",
                "--containerd-namespace", "bench", "--containerd-plugins-namespace", "bench-plugins",
                "--cgroup-parent", "/skiff-bench-docker"]
        if self.bridge:
            # Docker's default bridge, under a name and subnet of the benchmark's own (a bridge not
            # called docker0 must exist beforehand), with Docker's iptables rules (Firewall takes
            # them away afterwards). No ip_forward change: `true` needs no route out.
            # (-b and --bip exclude each other: the bridge's own address gives the subnet).
            net = ipaddress.ip_network(self.subnet)
            subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], check=True)
            subprocess.run(["ip", "addr", "add", f"{net[1]}/{net.prefixlen}", "dev", self.bridge], check=True)
            subprocess.run(["ip", "link", "set", self.bridge, "up"], check=True)
            argv += [f"--bridge={self.bridge}", "--ip-forward=false"]
        else:
            argv += ["--bridge=none", "--iptables=false", "--ip-forward=false", "--ip-masq=false"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self.log("dockerd"),
                                     start_new_session=True)
        self.wait_up("dockerd", 90)
        self.run("import", str(IMAGE_TAR), "busybox:latest")

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        return http_call(self.base / "docker.sock", method, path, body)

    def api_run_true(self) -> str:
        cid = str(self._call("POST", "/containers/create", {"Image": "busybox", "Cmd": ["true"],
                                                            "HostConfig": {"NetworkMode": "none"}})["Id"])
        self._call("POST", f"/containers/{cid}/start")
        self._call("POST", f"/containers/{cid}/wait")
        return cid

    def api_remove(self, cid: str) -> None:
        self._call("DELETE", f"/containers/{cid}?force=1")

    def create_many(self, count: int) -> list[str]:
        body = {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"NetworkMode": "none"}}
        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(lambda _: self._call("POST", "/containers/create", body)["Id"], range(count)))

    def container_overhead_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-f", f"containerd-shim.*{self.base}/"], capture_output=True,
                             text=True).stdout.split()
        return [int(p) for p in out]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.remove_all()
        super().stop()
        unmount_under(self.base)
        if self.bridge:
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


class Podman(Engine):
    service: subprocess.Popen[bytes] | None = None

    def cli(self) -> list[str]:
        return ["podman", "--root", str(self.base / "root"), "--runroot", str(self.base / "runroot"),
                "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file",
                "--tmpdir", str(self.base / "tmp")]

    def start(self) -> None:
        # Its network configuration (netavark) in a directory of its own, with a default
        # network on the benchmark's bridge name and subnet; no DNS server (aardvark).
        self.run_opts = [*PODMAN_ULIMITS, "--cgroup-parent", "/skiff-bench-podman"]
        self.pull_opts = ["--tls-verify=false"]
        conf = self.base / "containers.conf"
        conf.write_text(f'[network]\nnetwork_config_dir = "{self.base / "networks"}"\n')
        self.env = {"CONTAINERS_CONF": str(conf)}
        if self.bridge:
            # Podman 4.3 has no --interface-name: the bridge's name is set in the network's file.
            self.run("network", "create", "--disable-dns", "--subnet", self.subnet, "skbench")
            netfile = self.base / "networks" / "skbench.json"
            config = json.loads(netfile.read_text())
            config["network_interface"] = self.bridge
            netfile.write_text(json.dumps(config, indent=1))
            # ... and made the default only now (podman would take the name for its built-in default).
            with conf.open("a") as f:
                f.write('default_network = "skbench"\n')
        self.run("import", str(IMAGE_TAR), "busybox:latest")

    def store(self) -> Path:
        return self.base / "root"

    def engine_pids(self) -> list[int]:
        return []  # daemonless

    def api_run_true(self) -> str:
        raise NotImplementedError("podman has no daemon")

    def create_many(self, count: int) -> list[str]:
        # Podman's Docker-compatible API service (only for this set-up; stopped after), so
        # that making 1000 containers does not take 1000 CLI starts.
        sock = self.base / "podman.sock"
        self.service = subprocess.Popen([*self.cli(), "system", "service", "--time=0", f"unix://{sock}"],
                                        stdout=subprocess.DEVNULL, stderr=self.log("podman-service"),
                                        start_new_session=True, env={**os.environ, **self.env})
        try:
            wait_until(lambda: sock.exists(), 60, "podman system service")
            body = {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"NetworkMode": "none"}}
            with ThreadPoolExecutor(4) as pool:
                return list(pool.map(lambda _: http_call(sock, "POST", "/containers/create", body)["Id"],
                                     range(count)))
        finally:
            self.service.send_signal(signal.SIGTERM)
            try:
                self.service.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.service.pid, signal.SIGKILL)
                self.service.wait()

    def container_overhead_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-f", f"conmon.*{self.base}/"], capture_output=True, text=True).stdout.split()
        return [int(p) for p in out]

    def stop(self) -> None:
        self.run("rm", "-af", check=False)
        if self.bridge:
            self.run("network", "rm", "-f", "skbench", check=False)
        self.run("system", "reset", "--force", check=False)
        unmount_under(self.base)
        if self.bridge:
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        super().stop()


class Registry:
    """Debian's docker-registry on 127.0.0.1 with the Debian image pushed to it."""

    def __init__(self, base: Path):
        base.mkdir()
        self.base = base
        self.host = f"127.0.0.1:{free_port()}"
        (base / "config.yml").write_text(
            "version: 0.1\nlog: {level: error}\n"
            f"storage: {{filesystem: {{rootdirectory: {base / 'data'}}}, delete: {{enabled: true}}}}\n"
            f"http: {{addr: {self.host}}}\n")
        self.logf = open(base / "registry.log", "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(["docker-registry", "serve", str(base / "config.yml")], stdout=self.logf,
                                     stderr=subprocess.STDOUT, start_new_session=True)

        def up() -> bool:
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1).close()
                return True
            except OSError:
                return False

        wait_until(up, 30, "docker-registry")
        self.ref = f"{self.host}/debian:minbase"
        subprocess.run(["skopeo", "copy", "-q", "--format", "v2s2", "--dest-tls-verify=false",
                        f"oci:{DEBIAN_LAYOUT}:bench", f"docker://{self.ref}"], check=True, capture_output=True)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.logf.close()


def cpu_busy_idle() -> tuple[int, int]:
    """(busy, idle) jiffies of all CPUs together, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]) - idle, idle


def disk_writes() -> int:
    """Writes completed on the machine's disks (whole devices), from /proc/diskstats."""
    total = 0
    with open("/proc/diskstats") as f:
        for line in f:
            parts = line.split()
            name = parts[2]
            if name.startswith(("loop", "ram", "dm-")) or (name[-1].isdigit() and not name.startswith("nvme")):
                continue  # partitions and virtual devices: their writes are counted on the disk
            total += int(parts[7])
    return total


def settle(quiet: float = 0.8, window: float = 0.1, limit: float = 2.0) -> None:
    """Wait until a ``window`` passes with the CPUs at least ``quiet`` idle and no disk write
    completing (at most ``limit`` s): one engine's background clean-up (a daemon's fsyncs after
    a container's exit) is not billed to the next engine's sample."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        b0, i0 = cpu_busy_idle()
        w0 = disk_writes()
        time.sleep(window)
        b1, i1 = cpu_busy_idle()
        total = (b1 - b0) + (i1 - i0)
        if total and (i1 - i0) / total >= quiet and disk_writes() == w0:
            return


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """Wall time of ``fn()`` in ms, and what it returned."""
    start = time.perf_counter()
    result = fn()
    return (time.perf_counter() - start) * 1000, result


def interleaved(engines: list[Engine], runs: int, fn: Callable[[Engine], Any], deadline: Deadline,
                minimum: int = 3, warmup: bool = True,
                before: Callable[[Engine], object] | None = None,
                after: Callable[[Engine, Any], object] | None = None) -> dict[str, list[float]]:
    """``runs`` rounds of A B C, A B C, ...; ``before`` is untimed set-up for each sample,
    ``after(engine, what fn returned)`` untimed clean-up."""
    samples: dict[str, list[float]] = {e.name: [] for e in engines}
    if warmup:
        for e in engines:
            if before:
                before(e)
            result = fn(e)
            if after:
                after(e, result)
    for i in range(runs):
        if i >= minimum and deadline.passed():
            break
        for e in engines:
            if before:
                before(e)
            settle()
            ms, result = timed(lambda e=e: fn(e))  # type: ignore[misc]
            samples[e.name].append(ms)
            if after:
                after(e, result)
    return samples


# --- the scenarios -----------------------------------------------------------------------------

def cli_run(engine: Engine, network: str | None) -> None:
    net = ["--network", network] if network else []
    engine.run("run", "--rm", *net, "busybox", "true")


def check_bridge(engine: Engine) -> None:
    """The default network really is the benchmark's bridge: eth0 has an address of its subnet."""
    out = engine.run("run", "--rm", "busybox", "ip", "-o", "-4", "addr", "show", "eth0").stdout.decode()
    addrs = [w.split("/")[0] for w in out.split() if "/" in w and w[0].isdigit()]
    if not any(ipaddress.ip_address(a) in ipaddress.ip_network(engine.subnet) for a in addrs):
        raise RuntimeError(f"{engine.name}: eth0 is not on {engine.bridge} ({engine.subnet}): {out.strip()!r}")


def concurrent_runs(engine: Engine, count: int) -> None:
    procs = [engine.popen("run", "--rm", "--network", "none", "busybox", "true") for _ in range(count)]
    failed = []
    for p in procs:
        _, err = p.communicate(timeout=600)
        if p.returncode:
            failed.append(err.decode(errors="replace").strip()[-300:])
    if failed:
        raise RuntimeError(f"{engine.name}: {len(failed)} of {count} concurrent runs failed: {failed[0]}")


def disk_bytes(path: Path) -> int:
    out = subprocess.run(["du", "-sb", "--one-file-system", str(path)], capture_output=True, text=True).stdout
    return int(out.split()[0]) if out else 0


class EmptyStore:
    """Before each pull: the image and its layers gone, checked by the store's size on disk
    coming back to what it was before the first pull (so no layer cache is left)."""

    SLACK = 16 << 20  # databases and logs may grow a little

    def __init__(self, engines: list[Engine], ref: str):
        self.ref = ref
        self.baseline = {e.name: disk_bytes(e.store()) for e in engines}

    def __call__(self, engine: Engine) -> None:
        engine.clear_image(self.ref)
        size = disk_bytes(engine.store())
        if size > self.baseline[engine.name] + self.SLACK:
            raise RuntimeError(f"{engine.name}: store is {(size - self.baseline[engine.name]) >> 20} MB larger "
                               f"than before the first pull after removing {self.ref}: a layer cache is left")


def pull(engine: Engine, ref: str) -> None:
    engine.run("pull", *engine.pull_opts, ref)


def check_pulled(engine: Engine, ref: str) -> None:
    out = engine.run("run", "--rm", "--network", "none", ref, "cat", "/etc/debian_version").stdout.decode()
    if not out.strip():
        raise RuntimeError(f"{engine.name}: the pulled image does not run")


def memory(engines: list[Engine], containers: int) -> dict[str, tuple[float, float]]:
    """(idle engine PSS MB, PSS added per running container MB)."""
    out = {}
    for e in engines:
        idle = pss_kb(e.engine_pids()) / 1024
        ids = [e.run("run", "-d", "--network", "none", "busybox", "sleep", "600").stdout.decode().strip()
               for _ in range(containers)]
        time.sleep(2)
        busy = pss_kb(set(e.engine_pids() + e.container_overhead_pids())) / 1024
        e.run("rm", "-f", *ids, check=False)
        out[e.name] = (idle, (busy - idle) / containers)
    return out


def ps_all(engine: Engine, expect: int) -> None:
    lines = engine.run("ps", "-a").stdout.decode().splitlines()
    if len(lines) != expect + 1:
        raise RuntimeError(f"{engine.name} ps -a: {len(lines) - 1} containers, expected {expect}")


def rm_all(engine: Engine, ids: list[str]) -> None:
    engine.run("rm", *ids)


# --- output ------------------------------------------------------------------------------------

@dataclass
class Row:
    key: str
    title: str
    samples: dict[str, list[float]]
    unit: str = "ms"
    short: str = ""  # the chart panel's title


def fmt(values: list[float], unit: str) -> str:
    if not values:
        return "—"
    digits = 0 if unit == "ms" else (1 if unit == "s" else 2)
    med, lo, hi = statistics.median(values), min(values), max(values)
    return f"{med:.{digits}f} {unit}" + (f" ({lo:.{digits}f}-{hi:.{digits}f})" if len(values) > 1 else "")


def table(rows: list[Row], names: list[str]) -> list[str]:
    peers = [n for n in ("docker", "podman") if n in names]
    lines = ["| scenario | n | " + " | ".join(names) + "".join(f" | skiff/{p}" for p in peers) + " |",
             "|" + "---|" * (2 + len(names) + len(peers))]
    for r in rows:
        n = max((len(v) for v in r.samples.values()), default=0)
        cells = [fmt(r.samples.get(name, []), r.unit) for name in names]
        ratios = []
        for p in peers:
            s, q = r.samples.get("skiff"), r.samples.get(p)
            ratios.append(f"{statistics.median(s) / statistics.median(q):.2f}" if s and q and statistics.median(q)
                          else "—")
        lines.append(f"| {r.title} | {n} | " + " | ".join(cells) + "".join(f" | {x}" for x in ratios) + " |")
    return lines


def machine() -> str:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    versions = []
    for argv in (["dockerd", "--version"], ["podman", "--version"], ["runc", "--version"]):
        if shutil.which(argv[0]):
            out = subprocess.run(argv, capture_output=True, text=True).stdout.splitlines()
            versions.append(out[0].strip() if out else argv[0])
    cg = "cgroup v2" if not Path("/sys/fs/cgroup/cpu").exists() else "cgroup v1 (hybrid)"
    return (f"{platform.node()}: {os.cpu_count()} cores ({cpu}), "
            f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') >> 30} GiB, kernel {platform.release()}, "
            f"{cg}, Python {platform.python_version()}; " + "; ".join(versions))


def trace_section(skiff: Engine | None, runs: int) -> list[str]:
    """The per-phase breakdown of a skiff run, from the trace the engine records, if the
    module for it is there (bench/phases.py, written separately; the older name
    bench/trace.py is looked for too). Loaded by path: "trace" is also a standard module.

    The first of ``median_breakdown``/``breakdown``/``phase_breakdown`` it has is called
    with whichever of these keyword arguments it names: ``host`` (the gateway's address),
    ``runs``, ``cli`` (the skiff CLI's argv prefix), ``env``, ``image``. The result
    ({phase: ms}) is rendered by the module's ``markdown()`` if it has one, else as a table.
    """
    here = Path(__file__).parent
    path = next((here / n for n in ("phases.py", "trace.py") if (here / n).exists()), None)
    if skiff is None or path is None:
        return []
    head = [f"## Per-phase breakdown of a skiff run (bench/{path.name})", ""]
    try:
        spec = importlib.util.spec_from_file_location(f"skiff_bench_{path.stem}", path)
        if spec is None or spec.loader is None:
            return []
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        fn = next((getattr(mod, n) for n in ("median_breakdown", "breakdown", "phase_breakdown")
                   if callable(getattr(mod, n, None))), None)
        if fn is None:
            return [*head, f"bench/{path.name} has no breakdown function.", ""]
        offer = {"host": f"unix://{skiff.base}/run/skiff.sock", "runs": runs, "cli": skiff.cli(),
                 "env": {**os.environ, **skiff.env}, "image": "busybox"}
        params = inspect.signature(fn).parameters
        result = fn(**{k: v for k, v in offer.items() if k in params})
        render = getattr(mod, "markdown", None)
        if isinstance(result, str):
            text = result
        elif callable(render):
            text = render(result)
        else:
            pairs = list(result.items()) if isinstance(result, dict) else list(result)
            text = "\n".join(["| phase | ms |", "|---|---:|", *(f"| {k} | {float(v):.1f} |" for k, v in pairs)])
    except Exception as exc:  # a broken hook must not lose the results
        return [*head, f"bench/{path.name} failed: {exc!r}", ""]
    return [*head, str(text).rstrip(), ""]


def readme_table(summary: list[str]) -> None:
    """The README's copy of the table (between its bench markers), after a full run."""
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = "<!-- bench:start -->\n", "<!-- bench:end -->"
    if start not in text or end not in text:
        return
    body = "\n".join(summary).strip()
    head, rest = text.split(start, 1)
    readme.write_text(head + start + body + "\n" + end + rest.split(end, 1)[1])


def chart(rows: list[Row], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if sum(1 for v in r.samples.values() if v) > 0]
    if not shown:
        return
    cols = min(3, len(shown))
    nrows = (len(shown) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), squeeze=False)
    colors = {"skiff": "#2a7ab0", "docker": "#888888", "podman": "#a05a2c"}
    for ax, r in zip(axes.flat, shown, strict=False):
        names = [n for n, v in r.samples.items() if v]
        if all(len(r.samples[n]) > 1 for n in names):
            box = ax.boxplot([r.samples[n] for n in names], tick_labels=names, patch_artist=True)
            for patch, n in zip(box["boxes"], names, strict=True):
                patch.set_facecolor(colors.get(n, "#cccccc"))
        else:
            ax.bar(names, [statistics.median(r.samples[n]) for n in names],
                   color=[colors.get(n, "#cccccc") for n in names])
        ax.set_title(f"{r.key}. {r.short or r.title.split('. ', 1)[-1].replace('`', '')[:40]}", fontsize=9)
        ax.set_ylabel(r.unit)
        ax.set_ylim(bottom=0)
    for ax in list(axes.flat)[len(shown):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


# --- main ----------------------------------------------------------------------------------------

SCENARIOS = ("1", "2", "3", "4", "5", "6")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="for development: 3 repetitions, 10 concurrent, 10 sleeping, 100 created containers")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="scenarios to run, e.g. 1,3 (default: all)")
    parser.add_argument("--engines", default="skiff,docker,podman")
    parser.add_argument("--runs", type=int, help="repetitions of scenarios 1 and 2 (default 15; --quick 3)")
    parser.add_argument("--concurrent", type=int, help="containers at once in scenario 3 (default 50)")
    parser.add_argument("--containers", type=int, help="running containers in scenario 5 (default 50)")
    parser.add_argument("--created", type=int, help="created containers in scenario 6 (default 1000)")
    parser.add_argument("--budget", type=float, default=20,
                        help="minutes: past it, each scenario stops at its minimum repetitions (default 20)")
    parser.add_argument("--out", type=Path, help="where latest.md and latest.png go "
                        "(default bench/results; --quick: build/bench-quick)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench: run as root", file=sys.stderr)
        return 1
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if only - set(SCENARIOS):
        parser.error(f"--only: unknown scenario(s) {sorted(only - set(SCENARIOS))}; known: {','.join(SCENARIOS)}")
    q = args.quick
    runs = args.runs or (3 if q else 15)
    heavy_runs = 2 if q else 5  # scenarios 3 and 4 (each sample is seconds)
    concurrent = args.concurrent or (10 if q else 50)
    containers = args.containers or (10 if q else 50)
    created = args.created or (100 if q else 1000)
    rm_runs = 1 if q else 2
    out_dir: Path = args.out or (ROOT / "build" / "bench-quick" if q else RESULTS)
    t_start = time.monotonic()
    load_start = os.getloadavg()[0]
    budget = Budget(args.budget * 60, [k for k in Budget.WEIGHTS if k[0] in only])

    if "4" in only:
        import debimage

        debimage.build(DEBIAN_LAYOUT)

    kinds: dict[str, type[Engine]] = {"skiff": Skiff, "docker": Docker, "podman": Podman}
    wanted = [n for n in args.engines.split(",") if n]
    if set(wanted) - set(kinds):
        parser.error(f"--engines: unknown {sorted(set(wanted) - set(kinds))}")
    tmp = Path(tempfile.mkdtemp(prefix="skiff-bench-"))
    engines: list[Engine] = []
    registry: Registry | None = None
    firewall, host_paths = Firewall(), HostPaths()
    subnets = free_subnets(3) if "1" in only else ["", "", ""]
    rows: list[Row] = []
    trace: list[str] = []
    try:
        for name, subnet in zip(wanted, subnets, strict=False):
            if name != "skiff" and shutil.which({"docker": "dockerd", "podman": "podman"}[name]) is None:
                print(f"bench: {name} is not installed, skipped", file=sys.stderr)
                continue
            (tmp / name).mkdir()
            engine = kinds[name](name, tmp / name, bridge=BRIDGES[name] if "1" in only else "", subnet=subnet)
            engines.append(engine)
            engine.start()
        names = [e.name for e in engines]

        def add(key: str, title: str, samples: dict[str, list[float]], unit: str = "ms", short: str = "") -> None:
            rows.append(Row(key, title, {n: samples.get(n, []) for n in names}, unit, short))
            print(table(rows[-1:], names)[-1], flush=True)

        if "1" in only:
            print(f"bench: scenario 1 ({(time.monotonic() - t_start) / 60:.1f} min in)", file=sys.stderr,
                  flush=True)
            add("1a", "1a. `run --rm --network none busybox true` (CLI wall time)",
                interleaved(engines, runs, lambda e: cli_run(e, "none"), budget.slice("1a")),
                short="CLI run --rm true, no network")
            for e in engines:
                check_bridge(e)
            add("1b", "1b. `run --rm busybox true`, default bridge (CLI wall time)",
                interleaved(engines, runs, lambda e: cli_run(e, None), budget.slice("1b")),
                short="CLI run --rm true, bridge")
        if "2" in only:
            print(f"bench: scenario 2 ({(time.monotonic() - t_start) / 60:.1f} min in)", file=sys.stderr,
                  flush=True)
            add("2", "2. create+start+wait `true` via the API (network none)",
                interleaved([e for e in engines if e.name != "podman"], runs, lambda e: e.api_run_true(),
                            budget.slice("2"), after=lambda e, cid: e.api_remove(cid)),
                short="API create+start+wait true")
        if "3" in only:
            print(f"bench: scenario 3 ({(time.monotonic() - t_start) / 60:.1f} min in)", file=sys.stderr,
                  flush=True)
            s3 = interleaved(engines, heavy_runs, lambda e: concurrent_runs(e, concurrent), budget.slice("3"),
                             minimum=1, warmup=False)
            add("3", f"3. {concurrent} x `run --rm --network none busybox true` at once, until all exited",
                {n: [v / 1000 for v in s] for n, s in s3.items()}, "s", f"{concurrent} run --rm at once")
        if "4" in only:
            print(f"bench: scenario 4 ({(time.monotonic() - t_start) / 60:.1f} min in)", file=sys.stderr,
                  flush=True)
            registry = Registry(tmp / "registry")
            ref = registry.ref
            empty = EmptyStore(engines, ref)
            s4 = interleaved(engines, heavy_runs, lambda e: pull(e, ref), budget.slice("4"), minimum=1, warmup=False,
                             before=empty)
            for e in engines:
                check_pulled(e, ref)
                empty(e)
            import debimage

            size = debimage.sizes(DEBIAN_LAYOUT)
            what = (f"{size['uncompressed'] / 1e6:.0f} MB image ({size['compressed'] / 1e6:.0f} MB gzip)" if size
                    else "Debian image")
            add("4", f"4. pull a {what} from a local registry, empty store",
                {n: [v / 1000 for v in s] for n, s in s4.items()}, "s", "pull Debian image, empty store")
        if "5" in only:
            print(f"bench: scenario 5 ({(time.monotonic() - t_start) / 60:.1f} min in)", file=sys.stderr,
                  flush=True)
            budget.slice("5")
            mem = memory(engines, containers)
            add("5a", "5a. idle engine PSS", {n: [mem[n][0]] for n in names if n != "podman"}, "MB", "idle engine PSS")
            add("5b", f"5b. PSS added per running container ({containers} `sleep`)",
                {n: [mem[n][1]] for n in names}, "MB", "PSS per running container")
        if "6" in only:
            print(f"bench: scenario 6 ({(time.monotonic() - t_start) / 60:.1f} min in)", file=sys.stderr,
                  flush=True)
            ids: dict[str, list[str]] = {}
            ps_samples: dict[str, list[float]] = {n: [] for n in names}
            rm_samples: dict[str, list[float]] = {n: [] for n in names}
            deadline = budget.slice("6")
            for i in range(rm_runs):
                if i and deadline.passed():
                    break
                for e in engines:
                    e.remove_all()
                    ids[e.name] = e.create_many(created)
                for name, values in interleaved(engines, max(3, runs // 3), lambda e: ps_all(e, created), deadline,
                                                minimum=2, warmup=(i == 0)).items():
                    ps_samples[name] += values
                for name, values in interleaved(engines, 1, lambda e: rm_all(e, ids[e.name]), deadline, minimum=1,
                                                warmup=False).items():
                    rm_samples[name] += values
                for e in engines:
                    left = e.all_ids()
                    if left:
                        raise RuntimeError(f"{e.name}: {len(left)} containers left after rm")
            add("6a", f"6a. `ps -a` with {created} created containers", ps_samples,
                short=f"ps -a, {created} containers")
            add("6b", f"6b. `rm` of {created} created containers (one command)",
                {n: [v / 1000 for v in s] for n, s in rm_samples.items()}, "s", f"rm {created} containers")
        trace = trace_section(next((e for e in engines if e.name == "skiff"), None), 5 if q else 20)
    finally:
        if registry:
            registry.stop()
        for e in reversed(engines):
            try:
                e.stop()
            except Exception as exc:  # the others must still be stopped
                print(f"bench: stopping {e.name}: {exc}", file=sys.stderr)
        unmount_under(tmp)
        for line in firewall.restore([*BRIDGES.values(), *(s for s in subnets if s)]):
            print(f"bench: removed {line}", file=sys.stderr)
        for path in host_paths.restore():
            print(f"bench: removed {path}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)

    elapsed = time.monotonic() - t_start
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = [
        f"Machine: {machine()}.",
        "",
        f"{'Quick run (--quick); ' if q else ''}n = repetitions per engine, engines interleaved, "
        "each sample taken once the CPUs and disks are idle (at most 2 s wait); median (min-max). "
        f"Whole run: {elapsed / 60:.1f} min ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}); "
        f"load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end "
        f"(anything else running on the machine shows up as noise).",
        "",
        *table(rows, names),
    ]
    lines = [f"# skiff benchmark — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "", *summary, "", *trace]
    (out_dir / "latest.md").write_text("\n".join(lines))
    if out_dir == RESULTS and only == set(SCENARIOS) and not q:
        readme_table(summary)
    print("\n".join(lines))
    try:
        chart(rows, out_dir / "latest.png")
    except ImportError:
        print("bench: matplotlib is missing (make bench installs it); no chart", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
