"""skiff side by side with Docker and Podman, on this machine, in one run.

    make bench                       # every engine found, default repetitions
    .venv/bin/python bench/bench.py --runs 15 --engines skiff,docker

Each engine gets its own data root and socket under a temporary directory and is
stopped afterwards. Scenarios are interleaved (skiff, docker, podman, skiff, ...) so
that drift on a shared machine hits every engine alike. Results: a markdown table
(median, min-max, ratio skiff/peer) and a PNG chart in bench/results/.

Scenarios so far (issue 6 lists the rest): 1. `run --rm busybox true` as a user types
it, with --network none; 2. create + start + wait of `true` through the API from a
connected client; 5. idle PSS of the engine's own processes and PSS added per running
container.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
IMAGE_TAR = ROOT / "build" / "busybox.tar"
RESULTS = ROOT / "bench" / "results"


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def pss_kb(pids: list[int]) -> int:
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


def unmount_under(base: Path) -> None:
    """Podman leaves its storage's mounts behind (it has no daemon to stop): take them away."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f if line.split()[4].startswith(str(base))]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


class UnixHTTP(http.client.HTTPConnection):
    """Docker's HTTP API over its unix socket."""

    def __init__(self, path: str):
        super().__init__("localhost", timeout=60)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


@dataclass
class Engine:
    name: str
    base: Path
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    _log_fds: list[int] = field(default_factory=list)

    def cli(self) -> list[str]:
        raise NotImplementedError

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*self.cli(), *args], capture_output=True, check=check, env={**os.environ, **self.env},
                              timeout=300)

    def start(self) -> None:
        raise NotImplementedError

    def log(self, name: str) -> int:
        """A file descriptor for the daemon's log (the child keeps its own copy)."""
        fd = os.open(self.base / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        self._log_fds.append(fd)
        return fd

    def engine_pids(self) -> list[int]:
        """The engine's own processes (not the containers)."""
        return descendants(self.proc.pid) if self.proc else []

    def api_run_true(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        for fd in self._log_fds:
            os.close(fd)
        self._log_fds.clear()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Skiff(Engine):
    def cli(self) -> list[str]:
        return [str(VENV_BIN / "skiff"), "-H", f"unix://{self.base}/run/skiff.sock"]

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "skiffd"), "--data-root", str(self.base / "data"), "--exec-root", str(self.base / "run"),
             "-H", f"unix://{self.base}/run/skiff.sock"],
            stdout=subprocess.DEVNULL, stderr=self.log("skiffd"), start_new_session=True)
        wait_until(lambda: self.run("version", check=False).returncode == 0, 60, "skiffd")
        self.run("import", str(IMAGE_TAR), "busybox:latest")
        sys.path.insert(0, str(ROOT / "build" / "gen"))
        from skiff.api.v1 import api_pb2, api_pb2_grpc
        from skiff.common.server import channel
        from skiff.types.v1 import types_pb2

        self._pb, self._types = api_pb2, types_pb2
        self._stub = api_pb2_grpc.ContainerServiceStub(channel(f"unix://{self.base}/run/skiff.sock"))

    def api_run_true(self) -> None:
        pb, types = self._pb, self._types
        config = types.ContainerConfig(image="busybox")
        config.cmd.values[:] = ["true"]
        cid = self._stub.CreateContainer(pb.CreateContainerRequest(
            config=config, host_config=types.HostConfig(network_mode="none")), timeout=60).id
        self._stub.StartContainer(pb.StartContainerRequest(container=cid), timeout=60)
        self._stub.WaitContainer(pb.WaitContainerRequest(container=cid), timeout=60)
        self._stub.RemoveContainer(pb.RemoveContainerRequest(container=cid, force=True), timeout=60)

    def engine_pids(self) -> list[int]:
        shims = {int(p.read_text()) for p in (self.base / "run" / "containers").glob("*/shim.pid")}
        ctr = set()
        for shim in shims:
            ctr |= set(descendants(shim))
        return [p for p in descendants(self.proc.pid) if p not in ctr] if self.proc else []

    def container_overhead_pids(self) -> list[int]:
        return [int(p.read_text()) for p in (self.base / "run" / "containers").glob("*/shim.pid")]


class Docker(Engine):
    def cli(self) -> list[str]:
        return ["/usr/bin/docker", "-H", f"unix://{self.base}/docker.sock"]

    def start(self) -> None:
        # No bridge and no iptables: the network scenarios use --network none, and the
        # benchmark must not change the host's firewall.
        self.proc = subprocess.Popen(
            ["dockerd", "--data-root", str(self.base / "data"), "--exec-root", str(self.base / "exec"),
             "--pidfile", str(self.base / "docker.pid"), "-H", f"unix://{self.base}/docker.sock",
             "--bridge=none", "--iptables=false", "--ip-forward=false", "--ip-masq=false",
             "--containerd-namespace", "bench", "--containerd-plugins-namespace", "bench-plugins"],
            stdout=subprocess.DEVNULL, stderr=self.log("dockerd"), start_new_session=True)
        wait_until(lambda: self.run("version", check=False).returncode == 0, 60, "dockerd")
        self.run("import", str(IMAGE_TAR), "busybox:latest")

    def api_run_true(self) -> None:
        def call(method: str, path: str, body: dict | None = None) -> dict:
            conn = UnixHTTP(str(self.base / "docker.sock"))
            conn.request(method, path, json.dumps(body) if body is not None else None,
                         {"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            conn.close()
            if resp.status >= 300:
                raise RuntimeError(f"{method} {path}: {resp.status} {data!r}")
            return json.loads(data) if data else {}

        cid = call("POST", "/containers/create", {"Image": "busybox", "Cmd": ["true"],
                                                  "HostConfig": {"NetworkMode": "none"}})["Id"]
        call("POST", f"/containers/{cid}/start")
        call("POST", f"/containers/{cid}/wait")
        call("DELETE", f"/containers/{cid}?force=1")

    def container_overhead_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-f", f"containerd-shim.*{self.base}|containerd-shim-runc-v2.*bench"],
                             capture_output=True, text=True).stdout.split()
        return [int(p) for p in out]


class Podman(Engine):
    def cli(self) -> list[str]:
        return ["podman", "--root", str(self.base / "root"), "--runroot", str(self.base / "runroot"),
                "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file",
                "--tmpdir", str(self.base / "tmp")]

    def start(self) -> None:
        self.run("import", str(IMAGE_TAR), "busybox:latest")

    def engine_pids(self) -> list[int]:
        return []  # daemonless

    def api_run_true(self) -> None:
        raise NotImplementedError("podman has no daemon API in this set-up")

    def container_overhead_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-f", f"conmon.*{self.base}"], capture_output=True, text=True).stdout.split()
        return [int(p) for p in out]

    def stop(self) -> None:
        self.run("rm", "-af", check=False)
        self.run("system", "reset", "--force", check=False)
        unmount_under(self.base)


PODMAN_ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


def cli_run(engine: Engine) -> None:
    extra = PODMAN_ULIMITS if engine.name == "podman" else []
    engine.run("run", "--rm", "--network", "none", *extra, "busybox", "true")


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def interleaved(engines: list[Engine], runs: int, fn: Callable[[Engine], None]) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {e.name: [] for e in engines}
    for e in engines:  # one warm-up each
        fn(e)
    for _ in range(runs):
        for e in engines:
            samples[e.name].append(timed(lambda e=e: fn(e)))
    return samples


def memory(engines: list[Engine], containers: int) -> dict[str, tuple[float, float]]:
    """(idle engine PSS MB, PSS added per running container MB)."""
    out = {}
    for e in engines:
        idle = pss_kb(e.engine_pids()) / 1024
        extra = PODMAN_ULIMITS if e.name == "podman" else []
        ids = [e.run("run", "-d", "--network", "none", *extra, "busybox", "sleep", "600").stdout.decode().strip()
               for _ in range(containers)]
        time.sleep(1)
        busy = pss_kb(e.engine_pids() + e.container_overhead_pids()) / 1024  # type: ignore[attr-defined]
        e.run("rm", "-f", *ids, check=False)
        out[e.name] = (idle, (busy - idle) / containers)
    return out


def row(name: str, samples: dict[str, list[float]], unit: str = "ms") -> str:
    cells = []
    for values in samples.values():
        if not values:
            cells.append("—")
            continue
        digits = 0 if unit == "ms" else 2
        med, lo, hi = statistics.median(values), min(values), max(values)
        cells.append(f"{med:.{digits}f} {unit}" + (f" ({lo:.{digits}f}-{hi:.{digits}f})" if len(values) > 1 else ""))
    ratios = []
    if samples.get("skiff"):
        for peer in ("docker", "podman"):
            if samples.get(peer):
                ratios.append(f"{statistics.median(samples['skiff']) / statistics.median(samples[peer]):.2f}")
            else:
                ratios.append("—")
    return f"| {name} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--containers", type=int, default=20, help="running containers for the memory scenario")
    parser.add_argument("--engines", default="skiff,docker,podman")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench: run as root", file=sys.stderr)
        return 1
    kinds = {"skiff": Skiff, "docker": Docker, "podman": Podman}
    wanted = [n for n in args.engines.split(",") if n]
    tmp = Path(tempfile.mkdtemp(prefix="skiff-bench-"))
    engines: list[Engine] = []
    try:
        for name in wanted:
            if name != "skiff" and shutil.which({"docker": "dockerd", "podman": "podman"}[name]) is None:
                print(f"bench: {name} is not installed, skipped", file=sys.stderr)
                continue
            (tmp / name).mkdir()
            engine = kinds[name](name, tmp / name)
            engine.start()
            engines.append(engine)
        names = [e.name for e in engines]
        s1 = interleaved(engines, args.runs, cli_run)
        api_engines = [e for e in engines if e.name != "podman"]
        s2 = interleaved(api_engines, args.runs, lambda e: e.api_run_true())
        s2.update({e.name: [] for e in engines if e.name not in s2})
        s2 = {n: s2[n] for n in names}
        mem = memory(engines, args.containers)
    finally:
        for e in reversed(engines):
            e.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    head = "| scenario | " + " | ".join(names) + " | skiff/docker | skiff/podman |"
    lines = [
        f"# skiff benchmark — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') >> 30} GiB, kernel {platform.release()}; "
        f"{args.runs} runs per scenario, engines interleaved; median (min-max).",
        "",
        head,
        "|" + "---|" * (len(names) + 3),
        row("1. `run --rm --network none busybox true` (CLI wall time)", s1),
        row("2. create+start+wait `true` via the API (network none)", s2),
        row("5a. idle engine PSS", {n: [mem[n][0]] if n != "podman" else [] for n in names}, "MB"),
        row("5b. PSS added per running container", {n: [mem[n][1]] for n in names}, "MB"),
        "",
    ]
    (RESULTS / "latest.md").write_text("\n".join(lines))
    print("\n".join(lines))
    try:
        chart(s1, s2, RESULTS / "latest.png")
    except ImportError:
        print("bench: matplotlib is missing (make bench installs it); no chart", file=sys.stderr)
    return 0


def chart(s1: dict[str, list[float]], s2: dict[str, list[float]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (title, samples) in zip(axes, [("1. CLI run --rm true", s1), ("2. API create+start+wait", s2)],
                                    strict=True):
        names = [n for n, v in samples.items() if v]
        if not names:
            ax.set_visible(False)
            continue
        ax.boxplot([samples[n] for n in names], tick_labels=names)
        ax.set_title(title)
        ax.set_ylabel("ms")
    fig.tight_layout()
    fig.savefig(out, dpi=100)


if __name__ == "__main__":
    raise SystemExit(main())
