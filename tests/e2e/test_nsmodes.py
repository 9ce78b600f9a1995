"""Namespace modes (--pid, --ipc, --uts, --cgroupns), checked from inside the containers."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest


def _host_ns(kind: str) -> str:
    return os.readlink(f"/proc/self/ns/{kind}")


def test_pid_host_sees_the_hosts_processes(skiff) -> None:
    host_init = Path("/proc/1/comm").read_text().strip()
    r = skiff("run", "--rm", "--pid", "host", "busybox", "sh", "-c",
              "cat /proc/1/comm; echo $$; readlink /proc/self/ns/pid")
    assert r.returncode == 0, r.stderr
    comm, me, ns = r.stdout.split()
    assert comm == host_init and int(me) != 1 and ns == _host_ns("pid")
    r = skiff("run", "--rm", "busybox", "sh", "-c", "echo $$; readlink /proc/self/ns/pid", check=True)
    me, ns = r.stdout.split()
    assert me == "1" and ns != _host_ns("pid")  # the default: a pid namespace of its own


def test_pid_host_leaves_no_process_behind(skiff) -> None:
    cid = skiff("run", "-d", "--pid", "host", "busybox", "sh", "-c", "sleep 777 & echo $!; sleep 0.5",
                check=True).stdout.strip()
    try:
        assert skiff("wait", cid, timeout=60).stdout.strip() == "0"
        pid = int(skiff("logs", cid, check=True).stdout.split()[0])
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except FileNotFoundError:
            comm = ""
        assert comm != "sleep", "the container's background process outlived it"
        r = skiff("exec", cid, "true")
        assert r.returncode != 0
    finally:
        skiff("rm", "-f", cid)


def test_exec_joins_a_pid_host_container(skiff) -> None:
    cid = skiff("run", "-d", "--pid", "host", "busybox", "sleep", "300", check=True).stdout.strip()
    try:
        r = skiff("exec", cid, "readlink", "/proc/self/ns/pid", check=True)
        assert r.stdout.strip() == _host_ns("pid")
    finally:
        skiff("rm", "-f", cid)


def test_uts_host_has_the_hosts_name_and_cannot_change_it(skiff) -> None:
    r = skiff("run", "--rm", "--uts", "host", "busybox", "sh", "-c",
              "hostname; cat /etc/hostname; hostname boat 2>/dev/null; echo rc=$?; readlink /proc/self/ns/uts")
    assert r.returncode == 0, r.stderr
    name, etc, rc, ns = r.stdout.split()
    assert name == socket.gethostname() and etc == name
    assert rc != "rc=0" and ns == _host_ns("uts")
    assert socket.gethostname() == name  # nothing changed on the host
    r = skiff("create", "--uts", "host", "--hostname", "boat", "busybox", "true")
    assert r.returncode != 0 and "Conflicting options: hostname and the UTS mode" in r.stderr


def test_ipc_container_shares_the_donors_namespace_and_shm(skiff) -> None:
    donor = f"ipc-donor-{uuid.uuid4().hex[:8]}"
    private = f"ipc-private-{uuid.uuid4().hex[:8]}"
    skiff("run", "-d", "--name", donor, "--ipc", "shareable", "busybox", "sh", "-c",
          "echo shared > /dev/shm/note; sleep 300", check=True)
    skiff("run", "-d", "--name", private, "busybox", "sleep", "300", check=True)
    try:
        donor_ns = skiff("exec", donor, "readlink", "/proc/self/ns/ipc", check=True).stdout.strip()
        r = skiff("run", "--rm", "--ipc", f"container:{donor}", "busybox", "sh", "-c",
                  "readlink /proc/self/ns/ipc; cat /dev/shm/note")
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == [donor_ns, "shared"]
        assert donor_ns != _host_ns("ipc")
        r = skiff("run", "--rm", "busybox", "readlink", "/proc/self/ns/ipc", check=True)
        assert r.stdout.strip() not in (donor_ns, _host_ns("ipc"))  # private by default
        r = skiff("run", "--rm", "--ipc", f"container:{private}", "busybox", "true")
        assert r.returncode != 0 and "non-shareable IPC" in r.stderr, r.stderr
        skiff("stop", "-t", "0", donor, check=True)
        r = skiff("run", "--rm", "--ipc", f"container:{donor}", "busybox", "true")
        assert r.returncode != 0 and "cannot join IPC of a non running container" in r.stderr, r.stderr
    finally:
        skiff("rm", "-f", donor, private)


def test_ipc_host_and_none(skiff) -> None:
    r = skiff("run", "--rm", "--ipc", "host", "busybox", "readlink", "/proc/self/ns/ipc", check=True)
    assert r.stdout.strip() == _host_ns("ipc")
    r = skiff("run", "--rm", "--ipc", "none", "busybox", "sh", "-c", "grep -c ' /dev/shm ' /proc/mounts")
    assert r.stdout.strip() == "0"


def test_cgroupns(skiff) -> None:
    r = skiff("run", "--rm", "--cgroupns", "private", "busybox", "sh", "-c",
              "readlink /proc/self/ns/cgroup; cat /proc/self/cgroup", check=True)
    ns, *lines = r.stdout.split()
    assert ns != _host_ns("cgroup")
    memory = [x for x in lines if ":memory:" in x]
    assert memory == ["{}:memory:/".format(memory[0].split(":")[0])], lines  # rooted at its own cgroup
    r = skiff("run", "--rm", "--cgroupns", "host", "busybox", "sh", "-c",
              "readlink /proc/self/ns/cgroup; cat /proc/self/cgroup", check=True)
    ns, *lines = r.stdout.split()
    assert ns == _host_ns("cgroup")
    assert any(":memory:/" in x and len(x.split(":", 2)[2]) > 1 for x in lines), lines


@pytest.mark.parametrize("flags,message", [
    (["--ipc", "bogus"], "invalid IPC mode: bogus"),
    (["--ipc", "container:no-such-container"], "No such container: no-such-container"),
    (["--pid", "bogus"], "invalid PID mode: bogus"),
    (["--pid", "container:x"], "not supported"),
    (["--uts", "private"], "invalid UTS mode: private"),
    (["--cgroupns", "shared"], "invalid cgroup namespace mode: shared"),
    (["--ipc", "host", "--shm-size", "8m"], "--shm-size cannot be used with --ipc host"),
])
def test_refused_modes(skiff, flags: list[str], message: str) -> None:
    r = skiff("create", *flags, "busybox", "true")
    assert r.returncode != 0 and message in r.stderr, r.stderr
