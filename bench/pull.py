"""The wall time of pulling a ~160 MB image from a local registry: skiff next to Docker.

    .venv/bin/python bench/pull.py [--runs 3] [--mb 160] [--engines skiff,docker]

A real ``docker-registry`` on 127.0.0.1 serves an image made here (the busybox layer and
four layers of half random, half repetitive data, gzip; nothing is downloaded from the
network), pushed with skopeo. Each engine runs with a data root of its own (Docker with
no bridge and no iptables); pulls are interleaved, and the image is removed between runs
so that every pull downloads and unpacks every layer. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e import registries  # noqa: E402  (the same registry helpers as the e2e tests)

VENV_BIN = ROOT / ".venv" / "bin"
IMAGE_TAR = ROOT / "build" / "busybox.tar"


def data_layer(index: int, size: int) -> bytes:
    """A tar of files, half random bytes and half repetitive text: gzip shrinks it to about 60 %."""
    rng = random.Random(index)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        written, n = 0, 0
        while written < size:
            chunk = 4 << 20
            body = rng.randbytes(chunk // 2) + (f"layer {index} line {n} ".encode() * (chunk // 40))[: chunk // 2]
            info = tarfile.TarInfo(f"data{index}/file{n}.bin")
            info.size, info.mode, info.mtime = len(body), 0o644, 0
            tf.addfile(info, io.BytesIO(body))
            written += len(body)
            n += 1
    return buf.getvalue()


def wait_until(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not come up")
        time.sleep(0.2)


class Engine:
    def __init__(self, name: str, base: Path):
        self.name, self.base = name, base
        base.mkdir(parents=True)
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self) -> list[str]:
        raise NotImplementedError

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*self.cli(), *args], capture_output=True, check=check, timeout=900)

    def stop(self) -> None:
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
        log = open(self.base / "skiffd.log", "wb")  # noqa: SIM115 (kept for the daemon's life)
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "skiffd"), "--data-root", str(self.base / "data"), "--exec-root", str(self.base / "run"),
             "-H", f"unix://{self.base}/run/skiff.sock"], stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, env=dict(os.environ, SKIFF_BRIDGE=f"skb{os.getpid() % 100000}"))
        wait_until(lambda: self.run("version", check=False).returncode == 0, 60, "skiffd")


class Docker(Engine):
    def cli(self) -> list[str]:
        return ["docker", "-H", f"unix://{self.base}/docker.sock"]

    def start(self) -> None:
        log = open(self.base / "dockerd.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["dockerd", "--data-root", str(self.base / "data"), "--exec-root", str(self.base / "exec"),
             "--pidfile", str(self.base / "docker.pid"), "-H", f"unix://{self.base}/docker.sock",
             "--bridge=none", "--iptables=false", "--ip-forward=false", "--ip-masq=false",
             "--containerd-namespace", "pullbench", "--containerd-plugins-namespace", "pullbench-plugins"],
            stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        wait_until(lambda: self.run("version", check=False).returncode == 0, 60, "dockerd")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--mb", type=int, default=160, help="uncompressed size of the data layers")
    p.add_argument("--engines", default="skiff,docker")
    args = p.parse_args(argv)
    names = [n for n in args.engines.split(",") if n]
    if "docker" in names and shutil.which("dockerd") is None:
        print("dockerd not found: skiff only", file=sys.stderr)
        names = [n for n in names if n != "docker"]
    base = Path(tempfile.mkdtemp(prefix="skiff-pull-bench-"))
    engines: list[Engine] = []
    try:
        with registries.serve(base / "registry") as host:
            layers = [registries.busybox_layer(IMAGE_TAR, b"bench")]
            layers += [data_layer(i, (args.mb << 20) // 4) for i in range(4)]
            registries.oci_layout(base / "oci", layers, "1")
            registries.copy_to(base / "oci", "1", f"{host}/bench:1")
            blobs = base / "oci" / "blobs" / "sha256"
            compressed = sum(f.stat().st_size for f in blobs.iterdir())
            ref = f"{host}/bench:1"
            for name in names:
                eng = {"skiff": Skiff, "docker": Docker}[name](name, base / name)
                engines.append(eng)
                eng.start()
            times: dict[str, list[float]] = {e.name: [] for e in engines}
            for _ in range(args.runs):
                for eng in engines:
                    start = time.monotonic()
                    eng.run("pull", ref)
                    times[eng.name].append(time.monotonic() - start)
                    eng.run("rmi", ref)
            print(f"\nimage: {len(layers)} layers, {sum(map(len, layers)) / 1e6:.0f} MB uncompressed, "
                  f"{compressed / 1e6:.0f} MB in the registry (gzip); {args.runs} runs each, interleaved\n")
            print("| engine | median | min | max |\n|---|---|---|---|")
            for name, samples in times.items():
                print(f"| {name} | {statistics.median(samples):.2f} s | {min(samples):.2f} s | {max(samples):.2f} s |")
    finally:
        for eng in engines:
            eng.stop()
        subprocess.run(["umount", "-R", str(base)], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
