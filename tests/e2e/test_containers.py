"""A user's first session with skiff: run containers and look at them from inside."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

from tests.e2e.conftest import Engine


def test_pid_one_and_hostname(skiff) -> None:
    r = skiff("run", "--rm", "--hostname", "boat", "busybox", "sh", "-c", "echo $$; hostname")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "boat"]


def test_default_hostname_is_the_short_id(skiff) -> None:
    r = skiff("run", "-d", "busybox", "hostname")
    cid = r.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid), r
    assert skiff("wait", cid).stdout.strip() == "0"
    assert skiff("logs", cid).stdout.strip() == cid[:12]
    skiff("rm", cid, check=True)


def test_proc_shows_only_the_containers_processes(skiff) -> None:
    r = skiff("run", "--rm", "busybox", "sh", "-c", "ls /proc | grep -E '^[0-9]+$'")
    pids = sorted(int(p) for p in r.stdout.split())
    assert pids and pids[0] == 1
    assert len(pids) <= 3, pids  # sh, ls and grep at most


def test_root_is_the_images(skiff) -> None:
    r = skiff("run", "--rm", "busybox", "cat", "/etc/motd")
    assert r.stdout.strip() == "skiff demo image (busybox)"
    r = skiff("run", "--rm", "busybox", "sh", "-c", "test -c /dev/null && echo > /dev/null && ls /dev/pts")
    assert r.returncode == 0, r.stderr
    r = skiff("run", "--rm", "busybox", "touch", "/sys/x")
    assert r.returncode != 0  # /sys is read-only


def test_memory_limit_is_in_force(engine: Engine, skiff) -> None:
    """The container's own /proc/self/cgroup names its cgroup, and that cgroup holds the limits."""
    script = "cat /proc/self/cgroup; sleep 30"
    cid = skiff("run", "-d", "--memory", "64m", "--pids-limit", "50", "busybox", "sh", "-c", script).stdout.strip()
    try:
        deadline = time.monotonic() + 10
        while not (seen := skiff("logs", cid).stdout) and time.monotonic() < deadline:
            time.sleep(0.05)
        own = dict(line.split(":", 2)[1:] for line in seen.splitlines())
        if "memory" in own:  # cgroup v1
            assert int(Path(f"/sys/fs/cgroup/memory{own['memory']}/memory.limit_in_bytes").read_text()) == 64 << 20
            assert int(Path(f"/sys/fs/cgroup/pids{own['pids']}/pids.max").read_text()) == 50
            assert cid in own["memory"]
        else:  # cgroup v2
            assert int(Path(f"/sys/fs/cgroup{own['']}/memory.max").read_text()) == 64 << 20
        pid = json.loads(skiff("inspect", cid, check=True).stdout)[0]["State"]["Pid"]
        assert pid > 0 and Path(f"/proc/{pid}/cgroup").read_text() == seen
    finally:
        skiff("rm", "-f", cid)


def test_writes_stay_in_the_data_root(engine: Engine, skiff) -> None:
    name = f"marker-{uuid.uuid4().hex}"
    script = f"echo hi > /{name} && echo hi > /tmp/{name} && cat /{name}"
    r = skiff("run", "--rm", "busybox", "sh", "-c", script)
    assert r.stdout.strip() == "hi"
    assert not Path("/", name).exists()
    assert not Path("/tmp", name).exists()
    r = skiff("run", "-d", "busybox", "sh", "-c", f"echo hi > /{name}")
    cid = r.stdout.strip()
    skiff("wait", cid, check=True)
    found = list(engine.data_root.rglob(name))
    assert len(found) == 1, found  # in the container's writable layer, nowhere else
    skiff("rm", cid, check=True)
    assert not list(engine.data_root.rglob(name))


def test_exit_codes(skiff) -> None:
    assert skiff("run", "--rm", "busybox", "sh", "-c", "exit 3").returncode == 3
    # A missing image is pulled first; from a registry that is not there (nothing listens on port 1).
    r = skiff("run", "--rm", "127.0.0.1:1/no-such-image")
    assert r.returncode == 125 and "Unable to find image '127.0.0.1:1/no-such-image:latest' locally" in r.stderr
    assert "Error response from daemon: registry 127.0.0.1:1" in r.stderr
    r = skiff("run", "--rm", "busybox", "definitely-not-a-command")
    assert r.returncode == 127, r
    assert "definitely-not-a-command" in r.stderr
    r = skiff("run", "--rm", "busybox", "/etc/motd")
    assert r.returncode == 126, r


def test_env_workdir_user(skiff) -> None:
    r = skiff("run", "--rm", "-e", "GREETING=ahoy", "-w", "/tmp/work", "-u", "nobody", "busybox",
              "sh", "-c", 'echo "$GREETING $(pwd) $(id -u)"')
    assert r.stdout.strip() == "ahoy /tmp/work 65534", r.stderr


def test_names_conflicts_and_bad_input(skiff) -> None:
    r = skiff("create", "--name", "dup", "busybox", "true")
    assert r.returncode == 0, r.stderr
    first = r.stdout.strip()
    r = skiff("create", "--name", "dup", "busybox", "true")
    assert r.returncode == 125
    assert "already in use" in r.stderr and first in r.stderr
    r = skiff("create", "--name", "bad name!", "busybox", "true")
    assert r.returncode == 125 and "name" in r.stderr.lower()
    skiff("rm", "dup", check=True)
    assert skiff("inspect", "dup").returncode != 0


def test_rm_of_a_running_container_needs_force(skiff) -> None:
    cid = skiff("run", "-d", "busybox", "sleep", "60").stdout.strip()
    r = skiff("rm", cid)
    assert r.returncode != 0 and "running" in r.stderr
    assert skiff("ps", "-q", "--no-trunc").stdout.split().count(cid) == 1
    assert skiff("rm", "-f", cid).returncode == 0
    assert cid not in skiff("ps", "-aq", "--no-trunc").stdout


def test_logs_keep_streams_apart(skiff) -> None:
    cid = skiff("run", "-d", "busybox", "sh", "-c", "echo out; echo err >&2").stdout.strip()
    skiff("wait", cid)
    r = skiff("logs", cid)
    assert r.stdout == "out\n" and r.stderr == "err\n"
    skiff("rm", cid, check=True)
    cid = skiff("run", "-d", "busybox", "sh", "-c", "echo 1; echo 2; echo 3").stdout.strip()
    skiff("wait", cid)
    assert skiff("logs", "--tail", "2", cid).stdout == "2\n3\n"
    assert skiff("logs", "--tail", "0", cid).stdout == ""
    skiff("rm", cid, check=True)


def test_stop_escalates_to_sigkill(skiff) -> None:
    cid = skiff("run", "-d", "busybox", "sleep", "60").stdout.strip()
    started = time.monotonic()
    assert skiff("stop", "-t", "1", cid).returncode == 0
    assert time.monotonic() - started < 15
    assert skiff("wait", cid).stdout.strip() == "137"  # sleep as PID 1 ignores SIGTERM
    ps = skiff("ps", "-a", "--no-trunc").stdout
    assert re.search(rf"{cid[:12]}.*Exited \(137\)", ps), ps
    skiff("rm", cid, check=True)


def test_ps_table_looks_like_dockers(skiff) -> None:
    cid = skiff("run", "-d", "--name", "lister", "busybox", "sleep", "30").stdout.strip()
    try:
        lines = skiff("ps").stdout.splitlines()
        assert re.split(r"\s{2,}", lines[0].strip()) == [
            "CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
        row = next(line for line in lines if line.startswith(cid[:12]))
        assert "busybox" in row and "Up " in row and row.rstrip().endswith("lister")
    finally:
        skiff("rm", "-f", cid)


def test_run_attach_chooses_the_streams(skiff) -> None:
    script = "echo out; echo err >&2; exit 2"
    r = skiff("run", "--rm", "-a", "stdout", "busybox", "sh", "-c", script)
    assert (r.returncode, r.stdout, r.stderr) == (2, "out\n", ""), r
    r = skiff("run", "--rm", "-a", "STDERR", "busybox", "sh", "-c", script)
    assert (r.returncode, r.stdout, r.stderr) == (2, "", "err\n"), r
    r = skiff("run", "--rm", "-a", "STDOUT", "-a", "stderr", "busybox", "sh", "-c", script)
    assert (r.returncode, r.stdout, r.stderr) == (2, "out\n", "err\n"), r
    r = skiff("run", "--rm", "-a", "stdin", "-a", "stdout", "-i", "busybox", "cat", input=b"piped\n")
    assert (r.returncode, r.stdout) == (0, "piped\n"), r.stderr
    # stdin alone: the container reads it, no output is shown, the ID is printed (as Docker)
    r = skiff("run", "--rm", "-a", "stdin", "-i", "busybox", "sh", "-c",
              'read x; echo "got $x"; echo err >&2; test "$x" = piped && exit 4', input=b"piped\n")
    assert (r.returncode, r.stderr) == (4, ""), r
    assert len(r.stdout.strip()) == 64 and "got" not in r.stdout, r.stdout
    r = skiff("run", "-a", "nope", "busybox", "true")
    assert r.returncode == 125 and "valid streams are STDIN, STDOUT and STDERR" in r.stderr, r.stderr
    r = skiff("run", "-d", "-a", "stdout", "busybox", "true")
    assert r.returncode == 125 and "Conflicting options: -a and -d" in r.stderr, r.stderr


def test_env_file_label_file_and_cidfile(skiff, tmp_path: Path) -> None:
    env = tmp_path / "env"
    env.write_text("# a comment\nA=from-file\n  B=two words\nPATH\n\nC=\n")
    labels = tmp_path / "labels"
    labels.write_text("tier=web\nsolo\n")
    cidfile = tmp_path / "cid"
    r = skiff("run", "--env-file", str(env), "-e", "A=flag-wins", "--label-file", str(labels), "--cidfile",
              str(cidfile), "busybox", "sh", "-c", 'echo "$A|$B|${C-unset}|${PATH:+path-set}"')
    cid = cidfile.read_text()
    try:
        assert (r.returncode, r.stdout) == (0, "flag-wins|two words||path-set\n"), r.stderr
        assert len(cid) == 64
        got = json.loads(skiff("inspect", "-f", "{{json .Config.Labels}}", cid, check=True).stdout)
        assert got == {"tier": "web", "solo": ""}
        again = skiff("run", "--cidfile", str(cidfile), "busybox", "true")
        assert again.returncode == 125 and "Container ID file found" in again.stderr, again.stderr
        (tmp_path / "bad").write_text("BAD NAME=1\n")
        bad = skiff("run", "--rm", "--env-file", str(tmp_path / "bad"), "busybox", "true")
        assert bad.returncode == 125 and "contains whitespaces" in bad.stderr, bad.stderr
        missing = skiff("run", "--rm", "--env-file", str(tmp_path / "nope"), "busybox", "true")
        assert missing.returncode == 125 and "nope" in missing.stderr
    finally:
        skiff("rm", "-f", cid)


def test_group_add(skiff) -> None:
    """--group-add by gid and by name (the image's /etc/group), seen by `id -G` in the container."""
    r = skiff("run", "--rm", "--group-add", "777", "--group-add", "nogroup", "busybox", "id", "-G")
    assert r.returncode == 0 and r.stdout.split() == ["0", "777", "65534"], r.stderr
    r = skiff("run", "--rm", "--group-add", "nosuch", "busybox", "true")
    assert r.returncode != 0 and "unable to find group nosuch" in r.stderr, r.stderr
    cid = skiff("create", "--group-add", "777", "busybox", "true", check=True).stdout.strip()
    try:
        assert skiff("inspect", "-f", "{{json .HostConfig.GroupAdd}}", cid).stdout.strip() == '["777"]'
    finally:
        skiff("rm", cid)
