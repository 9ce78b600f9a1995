"""skiffd's zygote: services forked from one process, re-parented to skiffd, titled as if exec'd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from skiff.supervisor import zygote

# Plays skiffd: forks real service entry points from itself (what skiffd does at start and on restarts).
DRIVER = """
import os, sys, json, threading
from skiff.supervisor import health, zygote
fallback_calls = []
forker = zygote.Forker(lambda argv: fallback_calls.append(argv) or 0)
out = {"driver": os.getpid(), "clean": forker.clean()}
py = sys.executable
for key, argv in (("help", [py, "-m", "skiff.graphsvc", "--help"]),
                  ("bad", [py, "-m", "skiff.execsvc", "--no-such-flag"]),
                  ("other", ["/bin/true"])):
    pid = forker.spawn(argv)
    if pid:
        ppid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        _, status = os.waitpid(pid, 0)
        out[key] = [os.waitstatus_to_exitcode(status), ppid]
# Not clean any more (a thread; grpc used): exec'd the old way.
t = threading.Thread(target=threading.Event().wait, args=(1,), daemon=True)
t.start()
forker.spawn([py, "-m", "skiff.netsvc", "--help"])
t.join()
health.used_grpc = True
forker.spawn([py, "-m", "skiff.netsvc", "--help"])
out["fallback"] = fallback_calls
print(json.dumps(out))
"""


def test_services_fork_from_skiffd_while_it_is_clean() -> None:
    proc = subprocess.run([sys.executable, "-c", DRIVER], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["clean"]
    code, ppid = out["help"]
    assert code == 0 and "usage: skiff-graphsvc" in proc.stdout
    code_bad, ppid_bad = out["bad"]
    assert code_bad == 2 and "unrecognized arguments: --no-such-flag" in proc.stderr
    assert ppid == ppid_bad == out["driver"]
    py = sys.executable
    netsvc_help = [py, "-m", "skiff.netsvc", "--help"]
    assert out["fallback"] == [["/bin/true"], netsvc_help, netsvc_help]


def test_service_of_only_takes_skiff_services_of_this_python() -> None:
    py = sys.executable
    assert zygote.service_of([py, "-m", "skiff.netsvc", "-H", "x"]) == "netsvc"
    assert zygote.service_of([py, "-m", "skiff.cli"]) is None
    assert zygote.service_of(["/other/python", "-m", "skiff.netsvc"]) is None
    assert zygote.service_of([py, "script.py"]) is None


def test_disabled_by_env(monkeypatch) -> None:
    monkeypatch.setenv("SKIFF_ZYGOTE", "0")
    assert not zygote.enabled()
    monkeypatch.setenv("SKIFF_ZYGOTE", "1")
    assert zygote.enabled()


TITLE = """
import ctypes, json, os
from skiff.supervisor import proctitle
assert proctitle.set_cmdline(json.loads(os.environ["SKIFF_TITLE"]))
proctitle.set_name("skiff-test")
libc = ctypes.CDLL(None)
libc.getenv.restype = ctypes.c_char_p
print(open("/proc/self/cmdline", "rb").read().rstrip(b"\\0").decode(errors="replace"))
print(open("/proc/self/comm").read().strip())
print(libc.getenv(b"SKIFF_TITLE_PROBE").decode())
"""


def _title(tmp_path: Path, argv: list[str]) -> list[str]:
    """What a process whose own argv is short sees after set_cmdline(argv)."""
    (tmp_path / "t.py").write_text(TITLE)
    env = dict(os.environ, SKIFF_TITLE_PROBE="still-here", SKIFF_TITLE=json.dumps(argv))
    return subprocess.run([sys.executable, str(tmp_path / "t.py")], capture_output=True, text=True, env=env,
                          timeout=60, check=True).stdout.splitlines()


def test_cmdline_longer_than_the_original_runs_into_the_old_environment(tmp_path: Path) -> None:
    long = ["/usr/bin/python3", "-m", "skiff.graphsvc", "-H", "unix:///" + "x" * 300, "--data-root", "/d"]
    out = _title(tmp_path, long)
    assert out[0] == " ".join(long)
    assert out[1] == "skiff-test"
    assert out[2] == "still-here"  # the environment was moved, not overwritten


def test_cmdline_shorter_than_the_original_keeps_its_arguments(tmp_path: Path) -> None:
    short = ["py", "-m", "x"]
    out = _title(tmp_path, short)
    assert out[0].split("\0") == short
    assert out[2] == "still-here"


def test_the_grpc_free_probe_tells_serving_from_not_serving(tmp_path: Path) -> None:
    from grpc_health.v1 import health_pb2

    from skiff.common.server import Service
    from skiff.supervisor import health

    sock = tmp_path / "s.sock"
    svc = Service("x", [f"unix://{sock}"])
    svc.start()
    try:
        assert health.probe(f"unix://{sock}")
        assert not health.used_grpc
        svc.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert not health.probe(f"unix://{sock}")
    finally:
        svc.server.stop(None)
    assert not health.probe(f"unix://{sock}")  # nobody listening on the file
    assert not health.probe(f"unix://{tmp_path}/none.sock")
    (tmp_path / "plain.sock").touch()
    assert not health.probe(f"unix://{tmp_path}/plain.sock")
