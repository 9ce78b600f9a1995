"""The container's set-up, run by both inits (the ``runtime`` fixture runs each test with the
C init of the shim and with init.py forced): symlinks in the image that point mount
destinations out of the root, user and group lookup, errors and their wording, argv and env
that need escaping, ``--init``. Asserted from inside the container where possible."""

from __future__ import annotations

import resource
import signal
import subprocess
from pathlib import Path

import pytest

from skiff.common import errors
from skiff.execsvc import cinit, logs
from skiff.execsvc.nsmodes import NsModes
from skiff.execsvc.options import Options
from skiff.execsvc.runtime import Runtime
from skiff.execsvc.spec import ContainerSpec, write_etc_files
from tests.kernel.conftest import SHIM_DIR
from tests.kernel.test_runtime import MakeRootfs, run

pytestmark = pytest.mark.kernel


def _c_init(runtime: Runtime) -> bool:
    return not runtime.force_python_init


def test_which_init_sets_the_container_up(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    code, out, err = run(runtime, make_rootfs, "echo $$")
    assert (code, out) == (0, "1\n"), err
    # the C init's config is written for a default container, unless init.py is forced
    assert (runtime.bundle("c1") / "init.conf").exists() == _c_init(runtime)
    # a terminal is init.py's, whatever the switch
    rootfs, _ = make_rootfs()
    runtime.create(ContainerSpec(id="t", args=("true",), rootfs=rootfs, terminal=True))
    runtime.start("t")
    assert runtime.wait("t", timeout=20) == 0
    assert not (runtime.bundle("t") / "init.conf").exists()


def test_symlinked_mount_targets_stay_in_the_root(runtime: Runtime, make_rootfs: MakeRootfs, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "hosts").write_text("host's own\n")
    rootfs, upper = make_rootfs()
    etc = upper / "etc"
    etc.mkdir()
    # /etc/hosts -> an absolute host path; /etc/resolv.conf -> ../.. climbing out, dangling
    (etc / "hosts").symlink_to(victim / "hosts")
    (etc / "resolv.conf").symlink_to(f"../../../../../../..{victim}/made/resolv.conf")
    # a --tmpfs destination through a symlinked directory
    (upper / "mnt").mkdir()
    (upper / "mnt" / "esc").symlink_to(f"/../../..{victim}/t")
    script = f"""
        cat /etc/hosts /etc/resolv.conf
        cat {victim}/made/resolv.conf
        grep -c ' {victim}/t tmpfs ' /proc/mounts
        echo x > /mnt/esc/written && echo tmpfs-written
    """
    spec = ContainerSpec(id="esc", args=("sh", "-c", script), rootfs=rootfs, etc_hosts="10.0.0.1 box\n",
                         etc_resolv_conf="nameserver 10.0.0.53\n", options=Options(tmpfs=(("/mnt/esc", "size=1m"),)))
    runtime.create(spec)
    write_etc_files(spec, runtime.bundle("esc"))  # (execsvc's servicer writes them)
    runtime.start("esc")
    code = runtime.wait("esc", timeout=20)
    entries = list(logs.read(runtime.log_path("esc")))
    out = b"".join(e.data for e in entries if e.stream == "stdout").decode()
    err = b"".join(e.data for e in entries if e.stream == "stderr").decode()
    assert code == 0, err
    assert out.splitlines() == ["10.0.0.1 box", "nameserver 10.0.0.53", "nameserver 10.0.0.53", "1",
                                "tmpfs-written"], (out, err)
    # the host's files are untouched: everything was made inside the container's root
    assert (victim / "hosts").read_text() == "host's own\n"
    assert sorted(p.name for p in victim.iterdir()) == ["hosts"]
    assert (upper / victim.relative_to("/") / "made" / "resolv.conf").exists()


def test_users_groups_and_supplementary_groups(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    rootfs, upper = make_rootfs()
    (upper / "etc").mkdir()
    (upper / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home:/bin/sh\n"
                                          "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    (upper / "etc" / "group").write_text("root:x:0:\nalice:x:1000:\nstaff:x:50:alice,bob\nwheel:x:10:bob\n"
                                         "audio:x:29:alice\nnogroup:x:65534:\n")
    cases = {"alice": "1000 1000 1000 29 50", "alice:wheel": "1000 10 10 29 50", "1000": "1000 1000 1000 29 50",
             "1000:7": "1000 7 7 29 50", "4242": "4242 0 0", "nobody:staff": "65534 50 50"}
    for i, (user, want) in enumerate(cases.items()):
        runtime.create(ContainerSpec(id=f"u{i}", args=("sh", "-c", "echo $(id -u) $(id -g) $(id -G)"),
                                     rootfs=rootfs, user=user))
        runtime.start(f"u{i}")
        assert runtime.wait(f"u{i}", timeout=20) == 0
        got = b"".join(e.data for e in runtime.logs(f"u{i}")).decode().strip()
        assert got == want, (user, got)
        runtime.delete(f"u{i}")
    for user, msg in (("nosuch", "unable to find user nosuch: no matching entries in passwd file"),
                      ("alice:nogrp", "unable to find group nogrp: no matching entries in group file")):
        runtime.create(ContainerSpec(id="bad", args=("true",), rootfs=rootfs, user=user))
        with pytest.raises(errors.Internal) as e:
            runtime.start("bad")
        assert msg in str(e.value)
        runtime.delete("bad")


def test_group_add_by_gid_and_by_name(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    """`--group-add`: gids on both inits; names looked up in the container's /etc/group (init.py)."""
    rootfs, upper = make_rootfs()
    (upper / "etc").mkdir()
    (upper / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home:/bin/sh\n")
    (upper / "etc" / "group").write_text("root:x:0:\nalice:x:1000:\nstaff:x:50:alice\nvideo:x:44:\n")
    # `id -G`: the primary group first, then the others
    cases = [("alice", ("777",), "1000 1000 1000 50 777", True), ("", ("video", "777"), "0 0 0 44 777", False),
             ("alice", ("staff",), "1000 1000 1000 50", False)]
    for i, (user, extra, want, c_path) in enumerate(cases):
        runtime.create(ContainerSpec(id=f"g{i}", args=("sh", "-c", "echo $(id -u) $(id -g) $(id -G)"),
                                     rootfs=rootfs, user=user, group_add=extra))
        runtime.start(f"g{i}")
        assert (runtime.bundle(f"g{i}") / "init.conf").exists() == (c_path and _c_init(runtime))
        assert runtime.wait(f"g{i}", timeout=20) == 0
        got = b"".join(e.data for e in runtime.logs(f"g{i}")).decode().split()
        assert got[:2] == want.split()[:2] and sorted(got[2:], key=int) == sorted(want.split()[2:], key=int), got
        runtime.delete(f"g{i}")
    runtime.create(ContainerSpec(id="bad", args=("true",), rootfs=rootfs, group_add=("nosuchgroup",)))
    with pytest.raises(errors.Internal, match="unable to find group nosuchgroup: no matching entries in group file"):
        runtime.start("bad")
    runtime.delete("bad")
    with pytest.raises(errors.InvalidArgument, match="--group-add"):
        ContainerSpec(id="x", args=("true",), rootfs=rootfs, group_add=("a:b",)).validate()


@pytest.mark.parametrize(("cwd", "user", "args", "exc", "message"), [
    ("/etc/passwd", "", ("true",), errors.Internal, "init: FileExistsError: [Errno 17] File exists: '/etc/passwd'"),
    ("/root", "nobody", ("true",), errors.Internal, "chdir to cwd '/root': Permission denied"),
    ("/", "", ("/no/such",), errors.FailedPrecondition, 'exec: "/no/such": stat /no/such: no such file or directory'),
    ("/", "", ("/etc",), errors.FailedPrecondition, 'exec: "/etc": permission denied'),
    ("/", "", ("notexec",), errors.FailedPrecondition, 'exec: "notexec": permission denied'),
])
def test_start_errors_have_init_pys_wording(runtime: Runtime, make_rootfs: MakeRootfs, cwd: str, user: str,
                                            args: tuple[str, ...], exc: type, message: str) -> None:
    rootfs, upper = make_rootfs()
    (upper / "root").mkdir(mode=0o700)
    runtime.create(ContainerSpec(id="e", args=args, rootfs=rootfs, cwd=cwd, user=user))
    with pytest.raises(exc) as e:
        runtime.start("e")
    assert message in str(e.value)
    assert runtime.state("e").status == "created"


def test_argv_env_and_path_lookup(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    rootfs, upper = make_rootfs()
    (upper / "opt").mkdir()
    (upper / "opt" / "hello").write_text("#!/bin/sh\necho \"hello from $0 in $(pwd)\"\n")
    (upper / "opt" / "hello").chmod(0o755)
    runtime.create(ContainerSpec(
        id="a", args=("sh", "-c", 'printf "%s|" "$1" "$2" "$MULTI" "$TABS" "$DUP"; hello', "x", "a\nb", "c\\t\td"),
        rootfs=rootfs, cwd="/w", env=("PATH=/opt:/bin", "MULTI=l1\nl2", "TABS=\\t\t=", "DUP=1", "DUP=2")))
    runtime.start("a")
    assert runtime.wait("a", timeout=20) == 0
    out = b"".join(e.data for e in runtime.logs("a")).decode()
    assert out == "a\nb|c\\t\td|l1\nl2|\\t\t=|2|hello from /opt/hello in /w\n", out


def test_init_rlimits_and_signals(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    init = SHIM_DIR / "skiff-init"
    subprocess.run(["make", "-s", "-C", str(SHIM_DIR), "skiff-init"], check=True)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    code, out, err = run(runtime, make_rootfs, "echo $$; ulimit -n; ulimit -Hn", init_path=str(init),
                         rlimits=(("RLIMIT_NOFILE", 100, hard),))
    assert code == 0, err
    assert out.splitlines() == ["2", "100", str(hard)]  # skiff-init is PID 1, the shell its child
    # An ignored signal survives execve: the one the caller ignores is back to its default in
    # the container (the command itself is PID 1 here).
    old = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        rootfs, _ = make_rootfs()
        runtime.create(ContainerSpec(id="sig", args=("grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"),
                                     rootfs=rootfs))
        runtime.start("sig")
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert runtime.wait("sig", timeout=20) == 0
    out = b"".join(e.data for e in runtime.logs("sig")).decode()
    assert out.splitlines() == ["SigBlk:\t0000000000000000", "SigIgn:\t0000000000000000"], out


def test_cgroup_prefetch_changes_no_cgroup(runtime: Runtime) -> None:
    before = Path("/proc/self/cgroup").read_text()
    t = cinit.prefetch_cgroup_sync(runtime.cgroups)
    if runtime.cgroups.version == 1:
        assert t is not None
        t.join(timeout=30)
        assert not t.is_alive()
    else:
        assert t is None
    assert Path("/proc/self/cgroup").read_text() == before


def test_private_cgroup_namespace_is_rooted_at_the_containers_cgroup(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    code, out, err = run(runtime, make_rootfs, "cat /proc/self/cgroup", cid="cgns", ns=NsModes(cgroupns="private"))
    assert code == 0, err
    lines = out.splitlines()
    assert lines and all(ln.endswith(":/") for ln in lines), out  # every hierarchy, v1 and v2
    code, out, err = run(runtime, make_rootfs, "cat /proc/self/cgroup", cid="cghost", ns=NsModes(cgroupns="host"))
    assert code == 0, err
    assert any(ln.endswith("/cghost") for ln in out.splitlines()), out  # the host's view: the full path
