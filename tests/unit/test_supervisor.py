"""skiffd's supervision with tiny fake services (real processes serving grpc health on unix sockets)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from skiff.common import errors
from skiff.supervisor import health, process
from skiff.supervisor.backoff import Backoff
from skiff.supervisor.main import build_specs, parse_args
from skiff.supervisor.pidfile import PidFile
from skiff.supervisor.supervisor import ServiceSpec, Supervisor

# A service that serves only health + reflection, and notes its name in a file when it stops.
FAKE = """
import sys
from skiff.common.server import Service
name, sock, log = sys.argv[1:4]
Service(name, ["unix://" + sock]).run_until_signal()
with open(log, "a") as f:
    f.write(name + "\\n")
"""


def test_backoff_doubles_caps_and_resets() -> None:
    b = Backoff()
    assert [b.delay(0.5) for _ in range(9)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0]
    assert b.delay(10.0) == 0.1  # it stayed up long enough: forgiven
    assert b.delay(1.0) == 0.2


def fake_specs(tmp_path: Path, names: list[str]) -> list[ServiceSpec]:
    script = tmp_path / "fake.py"
    script.write_text(FAKE)
    return [
        ServiceSpec(n, [sys.executable, str(script), n, str(tmp_path / f"{n}.sock"), str(tmp_path / "stopped")],
                    f"unix://{tmp_path}/{n}.sock")
        for n in names
    ]


class Running:
    def __init__(self, sup: Supervisor):
        self.sup = sup
        self.rc: int | None = None
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        self.rc = self.sup.run()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    sup = Supervisor(fake_specs(tmp_path, ["graphsvc", "execsvc", "apiserver"]), stop_timeout=5)
    r = Running(sup)
    r.thread.start()
    yield r
    sup.request_stop()
    r.thread.join(30)


def test_start_order_ready_and_stop_order(running: Running, tmp_path: Path) -> None:
    assert running.sup.ready.wait(20)
    for name in ("graphsvc", "execsvc", "apiserver"):
        assert health.probe(f"unix://{tmp_path}/{name}.sock")
    running.sup.request_stop()
    running.thread.join(30)
    assert running.rc == 0
    assert (tmp_path / "stopped").read_text().split() == ["apiserver", "execsvc", "graphsvc"]
    assert not list(tmp_path.glob("*.sock"))


def test_sigkilled_service_is_serving_again_within_2s(running: Running, tmp_path: Path) -> None:
    assert running.sup.ready.wait(20)
    old = running.sup.pid_of("execsvc")
    assert old is not None
    os.kill(old, signal.SIGKILL)
    killed = time.monotonic()
    while time.monotonic() - killed < 2.0:
        pid = running.sup.pid_of("execsvc")
        if pid not in (None, old) and health.probe(f"unix://{tmp_path}/execsvc.sock", timeout=0.2):
            break
        time.sleep(0.02)
    else:
        pytest.fail("execsvc not serving again within 2 s of SIGKILL")
    others = [running.sup.pid_of(n) for n in ("graphsvc", "apiserver")]
    assert all(p is not None for p in others)


def test_startup_fails_when_a_service_dies(tmp_path: Path) -> None:
    specs = fake_specs(tmp_path, ["graphsvc"])
    specs.append(ServiceSpec("execsvc", [sys.executable, "-c", "raise SystemExit(3)"],
                             f"unix://{tmp_path}/execsvc.sock"))
    sup = Supervisor(specs, stop_timeout=5)
    assert sup.run() == 1
    assert (tmp_path / "stopped").read_text().split() == ["graphsvc"]  # the started one was stopped


def test_startup_fails_when_a_service_never_serves(tmp_path: Path) -> None:
    spec = ServiceSpec("slow", [sys.executable, "-c", "import time; time.sleep(60)"], f"unix://{tmp_path}/s.sock")
    sup = Supervisor([spec], start_timeout=0.5, stop_timeout=5)
    t = time.monotonic()
    assert sup.run() == 1
    assert time.monotonic() - t < 5


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    stubborn = ("import signal, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "from skiff.common.server import Service; s = Service('x', ['unix://' + sys.argv[1]]); "
                "s.start(); import time; time.sleep(60)")
    sock = tmp_path / "x.sock"
    sup = Supervisor([ServiceSpec("x", [sys.executable, "-c", stubborn, str(sock)], f"unix://{sock}")],
                     stop_timeout=0.3)
    r = Running(sup)
    r.thread.start()
    assert sup.ready.wait(20)
    sup.request_stop()
    r.thread.join(10)
    assert r.rc == 0 and sup.pid_of("x") is None


def test_restart_uses_backoff_with_fake_clock() -> None:
    """Injected clock/spawn/probe: no processes; a crash is fed through the reaper seam."""
    now = [100.0]
    spawned: list[list[str]] = []
    sup = Supervisor([ServiceSpec("a", ["a"], "unix:///nonexistent")], clock=lambda: now[0],
                     spawn=lambda argv: spawned.append(argv) or 10**8 + len(spawned), probe=lambda s: True)
    sup._start_all()
    child = sup.children[0]
    assert child.pid == 10**8 + 1 and child.serving  # no such pid: no pidfd
    for expected in (0.1, 0.2, 0.4):
        child.pid, child.serving = None, False  # as _reap does
        delay = child.backoff.delay(now[0] - child.started_at)
        child.restart_at = now[0] + delay
        assert delay == pytest.approx(expected)
        assert sup._next_timeout() == pytest.approx(expected)
        now[0] += delay
        sup._step()
        assert child.pid is not None
    sup._stop.set()


def test_pidfile_refuses_a_second_holder(tmp_path: Path) -> None:
    path = tmp_path / "run" / "skiffd.pid"
    with PidFile(path):
        assert path.read_text().strip() == str(os.getpid())
        with pytest.raises(errors.FailedPrecondition) as exc:
            PidFile(path).acquire()
        assert exc.value.metadata["pid"] == str(os.getpid())
    assert not path.exists()
    with PidFile(path):  # free again
        pass


def test_command_lines() -> None:
    args: argparse.Namespace = parse_args(["-H", "unix:///r/api.sock", "-H", "tcp://0.0.0.0:2376",
                                           "--exec-root", "/r", "--data-root", "/d", "-D",
                                           "--tlscacert", "/ca", "--tlscert", "/c", "--tlskey", "/k"])
    assert args.pidfile == Path("/r/skiffd.pid")
    specs = build_specs(args, python="/py")
    assert [s.name for s in specs] == ["graphsvc", "execsvc", "netsvc", "apiserver"]
    assert specs[1].argv == ["/py", "-m", "skiff.execsvc", "-H", "unix:///r/execsvc.sock",
                             "--data-root", "/d", "--exec-root", "/r", "-l", "debug"]
    assert specs[1].socket == "unix:///r/execsvc.sock"
    api = specs[3].argv
    assert api[:7] == ["/py", "-m", "skiff.apiserver", "-H", "unix:///r/api.sock", "-H", "tcp://0.0.0.0:2376"]
    assert api[api.index("--netsvc") + 1] == "unix:///r/netsvc.sock"
    assert api[api.index("--tlskey") + 1] == "/k"
    assert specs[3].socket == "unix:///r/api.sock"
    assert parse_args([]).hosts == ["unix:///run/skiff/skiff.sock"]


def test_registry_options_go_to_graphsvc() -> None:
    args = parse_args(["--insecure-registry", "reg:5000", "--insecure-registry", "10.0.0.0/8",
                       "--registry-mirror", "https://mirror.example"])
    graph = build_specs(args, python="/py")[0]
    assert graph.name == "graphsvc"
    assert graph.argv[-6:] == ["--insecure-registry", "reg:5000", "--insecure-registry", "10.0.0.0/8",
                               "--registry-mirror", "https://mirror.example"]
    assert all("--registry-mirror" not in s.argv for s in build_specs(args, python="/py")[1:])


# Like FAKE, and "execsvc" also starts two detached grandchildren (as execsvc starts
# container monitors): one long-lived ("a container"), one that exits soon.
FAKE_WITH_MONITORS = FAKE.replace("Service(name", """import subprocess
if name == "execsvc":
    subprocess.run(["sh", "-c", "setsid sleep 30 </dev/null >/dev/null 2>&1 & echo $! > " + log + ".container;"
                    " setsid sleep 0.3 </dev/null >/dev/null 2>&1 &"])
Service(name""")

DRIVER = """
import sys
import skiff.supervisor.main as m
from skiff.supervisor.supervisor import ServiceSpec
script, tmp = sys.argv[1:3]
m.build_specs = lambda args, python=sys.executable: [
    ServiceSpec(n, [python, script, n, f"{tmp}/{n}.sock", f"{tmp}/stopped"], f"unix://{tmp}/{n}.sock")
    for n in ("graphsvc", "execsvc", "netsvc", "apiserver")]
sys.exit(m.main(["--exec-root", tmp, "--data-root", tmp, "-l", "debug"]))
"""


def _zombie_children(ppid: int) -> list[int]:
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] == "Z" and int(fields[1]) == ppid:
                found.append(int(d.name))
    return found


@pytest.fixture
def subreaper() -> Iterator[None]:
    """The "container" outlives skiffd and re-parents to us, so we can reap it (PID 1 may not)."""
    process.become_subreaper()
    yield
    process.become_subreaper(False)


def test_skiffd_main_reaps_orphans_spares_containers_and_exits_0(tmp_path: Path, subreaper: None) -> None:
    script = tmp_path / "fake.py"
    script.write_text(FAKE_WITH_MONITORS)
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(script), str(tmp_path)],
                            stderr=subprocess.PIPE, text=True)
    container = 0
    try:
        deadline = time.monotonic() + 20
        while not health.probe(f"unix://{tmp_path}/apiserver.sock", timeout=0.2):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert (tmp_path / "skiffd.pid").read_text().strip() == str(proc.pid)
        second = subprocess.run([sys.executable, "-c", DRIVER, str(script), str(tmp_path)],
                                capture_output=True, text=True, timeout=20)
        assert second.returncode == 1 and "another skiffd" in second.stderr
        container = int((tmp_path / "stopped.container").read_text())
        time.sleep(1.0)  # the short-lived orphan has exited and re-parented to skiffd
        assert _zombie_children(proc.pid) == []
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "reaped pid" in err
        assert (tmp_path / "stopped").read_text().split() == ["apiserver", "netsvc", "execsvc", "graphsvc"]
        assert not (tmp_path / "skiffd.pid").exists()
        os.kill(container, 0)  # the "container" outlived skiffd
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if container:
            os.kill(container, signal.SIGKILL)
            os.waitpid(container, 0)
