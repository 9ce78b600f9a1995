"""End-to-end tier: a real skiffd with temporary data and exec roots, driven through the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import is_root

VENV_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.e2e


@dataclass
class Engine:
    data_root: Path
    exec_root: Path
    host: str
    proc: subprocess.Popen[bytes]
    log: Path

    def skiff(self, *args: str, check: bool = False, timeout: float = 60, input: bytes | None = None
              ) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, SKIFF_HOST=self.host)
        result = subprocess.run([str(VENV_BIN / "skiff"), *args], capture_output=True, text=True,
                                env=env, timeout=timeout, input=input.decode() if input else None)
        if check and result.returncode != 0:
            raise AssertionError(f"skiff {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    def service_pid(self, name: str) -> int:
        out = subprocess.run(["pgrep", "-f", f"python.* -m skiff[.]{name} .*{self.exec_root}/"], capture_output=True,
                             text=True).stdout.split()
        assert len(out) == 1, f"expected one {name} process, found {out}"
        return int(out[0])


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(path))]


def start_engine(base: Path, busybox_tar: Path, extra_args: list[str] | tuple[str, ...] = (),
                 env: dict[str, str] | None = None) -> Engine:
    """A skiffd with its roots under ``base``, answering, with busybox:latest imported."""
    data_root, exec_root = base / "data", base / "run"
    host = f"unix://{exec_root}/skiff.sock"
    log = base / "skiffd.log"
    base.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            [str(VENV_BIN / "skiffd"), "-D", "--data-root", str(data_root), "--exec-root", str(exec_root),
             "-H", host, *extra_args],
            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ, **(env or {})),
        )
    eng = Engine(data_root, exec_root, host, proc, log)
    deadline = time.monotonic() + 60
    while eng.skiff("version").returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"skiffd did not start:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)
    eng.skiff("import", str(busybox_tar), "busybox:latest", check=True)
    return eng


def stop_engine(eng: Engine, base: Path) -> None:
    """Remove every container, stop skiffd, and check that no mount under ``base`` is left."""
    ids = eng.skiff("ps", "-aq", "--no-trunc").stdout.split()
    if ids:
        eng.skiff("rm", "-f", *ids)
    eng.proc.send_signal(signal.SIGTERM)
    try:
        eng.proc.wait(30)
    except subprocess.TimeoutExpired:
        eng.proc.kill()
        eng.proc.wait()
    leftovers = _mounts_under(base)
    for mnt in reversed(leftovers):
        subprocess.run(["umount", "-l", mnt], check=False)
    assert not leftovers, f"mounts left behind: {leftovers}"


@pytest.fixture(scope="package")  # torn down, and checked, when the e2e tier ends
def engine(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Iterator[Engine]:
    if not is_root():
        pytest.skip("the end-to-end tier needs root (namespaces, cgroups, overlayfs)")
    base = tmp_path_factory.mktemp("skiff-e2e")
    bridge = f"skt{os.getpid() % 1000000}"
    cgroup_parent = f"skiff-e2e-{os.getpid()}"
    # A bridge, iptables chains and cgroup parent of this run's own: engines side by side share none.
    eng = start_engine(base, busybox_tar, env={"SKIFF_BRIDGE": bridge, "SKIFF_CGROUP_PARENT": cgroup_parent})
    try:
        yield eng
    finally:
        stop_engine(eng, base)
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
        assert f" {bridge}:" not in links and f"master {bridge} " not in links, "bridge or veths left behind"
        assert f"SKIFF-{bridge.upper()}" not in rules, "iptables rules left behind"
        cgroups = [p for p in Path("/sys/fs/cgroup").glob(f"*/{cgroup_parent}") if p.is_dir()]
        assert not cgroups, f"cgroups left behind: {cgroups}"
        assert not _live_with(f"/{cgroup_parent}/"), "warm-slot shims left behind"


def _live_with(marker: str) -> list[int]:
    """Live (not zombie) processes whose command line contains ``marker``: a standby skiff-shim
    and its child name their slot's cgroup.procs files."""
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes()
            stat = (p / "stat").read_text()
        except OSError:
            continue
        if marker.encode() in cmd and stat[stat.rindex(")") + 2] != "Z":
            found.append(int(p.name))
    return found


@pytest.fixture
def skiff(engine: Engine):
    return engine.skiff
