"""`skiff exec` through the CLI: a second process in a running container."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from tests.e2e.conftest import Engine


@pytest.fixture
def box(engine: Engine):
    name = f"ex-{uuid.uuid4().hex[:8]}"
    engine.skiff("run", "-d", "--name", name, "--hostname", "boat", "-e", "FOO=run", "busybox", "sh", "-c",
                 "echo hello > /tmp/mark; exec sleep 600", check=True)
    yield name
    engine.skiff("rm", "-f", name)


def test_exec_runs_in_the_containers_namespaces(skiff, box: str) -> None:
    r = skiff("exec", box, "sh", "-c", "echo $$; hostname; cat /proc/1/cmdline; echo; cat /tmp/mark")
    assert r.returncode == 0, r.stderr
    pid, host, cmdline, mark = r.stdout.splitlines()
    assert int(pid) > 1 and host == "boat" and mark == "hello"
    assert cmdline.split("\0")[:2] == ["sleep", "600"]


def test_exec_exit_codes(skiff, box: str) -> None:
    r = skiff("exec", box, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
    r = skiff("exec", box, "nosuchcmd")
    assert r.returncode == 127, r
    assert "executable file not found" in r.stderr
    assert skiff("exec", box, "/etc/motd").returncode == 126


def test_exec_user_env_and_workdir(skiff, box: str) -> None:
    assert skiff("exec", "-u", "nobody", box, "id", "-u").stdout == "65534\n"
    r = skiff("exec", "-e", "BAR=x", "-w", "/etc", box, "sh", "-c", "echo $FOO $BAR; pwd")
    assert r.stdout.split() == ["run", "x", "/etc"], r.stderr


def test_exec_has_the_containers_security(skiff, box: str) -> None:
    def status(*args: str) -> list[str]:
        out = skiff(*args, "grep", "-E", "^(CapEff|CapBnd|NoNewPrivs|Seccomp):", "/proc/self/status").stdout
        assert out.count("\n") == 4, out
        return out.splitlines()

    assert status("exec", box) == status("run", "--rm", "busybox")


def test_exec_privileged_gets_every_capability(skiff, box: str) -> None:
    def caps(*flags: str) -> dict[str, str]:
        out = skiff("exec", *flags, box, "grep", "-E", "^Cap(Eff|Bnd):", "/proc/self/status", check=True).stdout
        return dict(line.split(":\t") for line in out.splitlines())

    with open("/proc/self/status") as f:  # the host's own bounding set: what --privileged hands out
        host = next(line.split()[1] for line in f if line.startswith("CapBnd:"))
    plain, privileged = caps(), caps("--privileged")
    assert privileged == {"CapEff": host, "CapBnd": host}
    assert plain["CapEff"] != host and plain["CapBnd"] != host  # the container's own set is unchanged
    assert caps() == plain
    # A capability Docker's default set lacks works only with --privileged (CAP_NET_ADMIN: a link up).
    assert skiff("exec", box, "ip", "link", "set", "lo", "down").returncode != 0
    assert skiff("exec", "--privileged", box, "ip", "link", "set", "lo", "up").returncode == 0


def test_exec_detached(skiff, box: str) -> None:
    r = skiff("exec", "-d", box, "sh", "-c", "sleep 0.2; echo later > /tmp/detached")
    assert (r.returncode, r.stdout) == (0, "")
    r = skiff("exec", box, "sh", "-c", "for i in $(seq 50); do test -f /tmp/detached && break; sleep 0.1; done; "
                                       "cat /tmp/detached")
    assert r.stdout == "later\n"


def test_exec_into_a_stopped_container_fails(skiff, engine: Engine) -> None:
    cid = skiff("create", "busybox", "true", check=True).stdout.strip()
    r = skiff("exec", cid, "true")
    assert r.returncode == 1
    assert r.stderr.strip() == f"Error response from daemon: Container {cid} is not running"
    skiff("rm", cid, check=True)
    assert skiff("exec", "nosuchcontainer", "true").returncode == 1


def test_nothing_left_after_rm(skiff, engine: Engine, box: str) -> None:
    skiff("exec", "-d", box, "sleep", "600", check=True)
    cid = skiff("inspect", "-f", "{{.Id}}", box).stdout.strip() or box

    def monitors() -> str:
        pattern = f"skiff-shim exec {engine.exec_root.resolve()}"
        return subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout

    assert monitors() != ""
    skiff("rm", "-f", box, check=True)
    assert monitors() == ""
    assert not list(engine.exec_root.glob(f"containers/{cid}*"))
