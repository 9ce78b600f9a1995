"""Limits and security options without root: v2 cgroup files on fixtures, the HostConfig rules,
the config.json edits and the CLI's parsing and stats table."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from skiff.apiserver import hostopts
from skiff.cli import exits, lifecycle
from skiff.common import errors
from skiff.exec.v1 import exec_pb2
from skiff.execsvc import options, spec
from skiff.execsvc.cgroups import CgroupV2, Resources, blkio_to_io_weight, shares_to_weight
from skiff.types.v1 import types_pb2


@pytest.fixture
def v2(tmp_path: Path) -> CgroupV2:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    cg = CgroupV2(tmp_path, "skiff")
    cg.create("c1", 64 << 20, 10)
    parent = tmp_path / "skiff"
    (parent / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    return cg


def test_shares_and_blkio_weight_convert_as_runc() -> None:
    assert shares_to_weight(2) == 1 and shares_to_weight(262144) == 10000 and shares_to_weight(1024) == 39
    assert blkio_to_io_weight(10) == 1 and blkio_to_io_weight(1000) == 10000 and blkio_to_io_weight(500) == 4950


def test_v2_resources_write_cpu_max_weight_cpuset_low_and_io(v2: CgroupV2) -> None:
    v2.set_resources("c1", Resources(cpu_quota=50000, cpu_period=100000, cpu_shares=512, cpuset_cpus="0-1",
                                     memory_reservation=1 << 20, blkio_weight=500))
    d = v2.root / "skiff" / "c1"
    assert (d / "cpu.max").read_text() == "50000 100000"
    assert (d / "cpu.weight").read_text() == str(shares_to_weight(512))
    assert (d / "cpuset.cpus").read_text() == "0-1"
    assert (d / "memory.low").read_text() == str(1 << 20)
    assert (d / "io.weight").read_text() == "default 4950"
    assert "+cpu" in (v2.root / "skiff" / "cgroup.subtree_control").read_text()


def test_v2_freeze_writes_cgroup_freeze_and_waits_for_the_event(v2: CgroupV2) -> None:
    d = v2.root / "skiff" / "c1"
    (d / "cgroup.events").write_text("populated 1\nfrozen 1\n")  # what the kernel reports once frozen
    v2.freeze("c1", True)
    assert (d / "cgroup.freeze").read_text() == "1" and v2.frozen("c1")
    (d / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    v2.freeze("c1", False)
    assert (d / "cgroup.freeze").read_text() == "0" and not v2.frozen("c1")


def test_v2_usage_reads_cpu_memory_io_and_pids(v2: CgroupV2) -> None:
    d = v2.root / "skiff" / "c1"
    (d / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\n")
    (d / "memory.current").write_text("3000000\n")
    (d / "memory.stat").write_text("anon 1\ninactive_file 1000000\n")
    (d / "io.stat").write_text("8:0 rbytes=10 wbytes=20 rios=1 wios=2\n8:16 rbytes=1 wbytes=2\n")
    (d / "pids.current").write_text("3\n")
    u = v2.usage("c1")
    assert (u.cpu_ns, u.memory, u.memory_limit, u.block_read, u.block_write, u.pids) == (
        1_500_000, 2_000_000, 64 << 20, 11, 22, 3)


def test_capabilities_follow_dockers_add_and_drop_rules() -> None:
    assert hostopts.capabilities(types_pb2.HostConfig()) is None
    assert hostopts.capabilities(types_pb2.HostConfig(cap_drop=["ALL"])) == []
    assert hostopts.capabilities(types_pb2.HostConfig(cap_drop=["all"], cap_add=["net_admin"])) == ["CAP_NET_ADMIN"]
    caps = hostopts.capabilities(types_pb2.HostConfig(cap_add=["SYS_ADMIN"], cap_drop=["CAP_CHOWN"]))
    assert caps is not None and "CAP_SYS_ADMIN" in caps and "CAP_CHOWN" not in caps and "CAP_KILL" in caps
    with pytest.raises(errors.InvalidArgument, match="unknown capability"):
        hostopts.capabilities(types_pb2.HostConfig(cap_add=["FOO"]))


@pytest.mark.parametrize("hc, message", [
    (types_pb2.HostConfig(sysctls={"kernel.panic": "1"}), "sysctl 'kernel.panic' is not allowed"),
    (types_pb2.HostConfig(sysctls={"net.ipv4.ip_forward": "1"}, network_mode="host"), "host network namespace"),
    (types_pb2.HostConfig(ulimits=[types_pb2.Ulimit(name="nofile", soft=200, hard=100)]), "200 > 100"),
    (types_pb2.HostConfig(ulimits=[types_pb2.Ulimit(name="bogus", soft=1, hard=1)]), "invalid ulimit type"),
    (types_pb2.HostConfig(memory_swap=1 << 30), "always set the Memory limit"),
    (types_pb2.HostConfig(memory_bytes=1 << 30, memory_swap=1 << 20), "memoryswap limit should be larger"),
    (types_pb2.HostConfig(nano_cpus=10**15), "Range of CPUs"),
    (types_pb2.HostConfig(security_opt=["seccomp={bad"]), "seccomp profile"),
    (types_pb2.HostConfig(security_opt=["bogus"]), "invalid --security-opt"),
    (types_pb2.HostConfig(restart_policy=types_pb2.RestartPolicy(name="sometimes")), "invalid restart policy"),
    (types_pb2.HostConfig(auto_remove=True, restart_policy=types_pb2.RestartPolicy(name="always")), "AutoRemove"),
])
def test_bad_host_options_are_invalid_arguments(hc: types_pb2.HostConfig, message: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=message):
        hostopts.validate(hc)


def test_namespaced_sysctls_are_allowed() -> None:
    hostopts.validate(types_pb2.HostConfig(sysctls={"net.core.somaxconn": "1", "kernel.shmmax": "1",
                                                    "kernel.msgmax": "1", "kernel.sem": "1 2 3 4",
                                                    "fs.mqueue.msg_max": "1"}))


def test_task_spec_gets_cpu_quota_and_security_fields() -> None:
    ts = exec_pb2.TaskSpec()
    hostopts.fill_task_spec(ts, types_pb2.HostConfig(
        nano_cpus=500_000_000, cap_drop=["ALL"], security_opt=["seccomp=unconfined", "no-new-privileges=false"],
        readonly_rootfs=True, tmpfs={"/run": "size=1m"}, sysctls={"net.ipv4.ip_forward": "1"}))
    assert (ts.cpu_quota, ts.cpu_period) == (50000, 100000)
    assert ts.has_capabilities and list(ts.capabilities) == []
    assert (ts.seccomp_profile, ts.allow_new_privileges, ts.readonly_rootfs) == ("unconfined", True, True)
    assert [(m.target, list(m.options)) for m in ts.tmpfs] == [("/run", ["size=1m"])]


def _config(opts: options.Options) -> dict:
    s = spec.ContainerSpec(id="c", args=("true",), rootfs=spec.RootfsMount("bind", "/x"), options=opts)
    s.validate()
    return spec.build_config(s, Path("/b"), [], "/skiff/c")


def test_config_for_privileged_read_only_tmpfs_shm_and_sysctls() -> None:
    cfg = _config(options.Options(privileged=True, readonly_rootfs=True, tmpfs=(("/tmp", "size=1m"),),
                                  shm_size=8 << 20, sysctls=(("net.ipv4.ip_forward", "1"),)))
    assert cfg["skiff"]["seccompFilter"] == [] and "seccomp" not in cfg["linux"]
    assert cfg["linux"]["maskedPaths"] == [] and cfg["linux"]["readonlyPaths"] == []
    assert cfg["process"]["capabilities"]["effective"] == options.all_capabilities()
    assert cfg["root"]["readonly"] is True
    mounts = {m["destination"]: m for m in cfg["mounts"]}
    assert mounts["/tmp"]["options"] == ["nosuid", "nodev", "noexec", "size=1m"]
    assert "size=8192k" in mounts["/dev/shm"]["options"]
    assert "ro" not in mounts["/sys"]["options"]
    assert cfg["linux"]["sysctl"] == {"net.ipv4.ip_forward": "1"}


def test_default_shm_is_64m_and_a_custom_seccomp_profile_compiles() -> None:
    cfg = _config(options.Options())
    assert "size=65536k" in {m["destination"]: m for m in cfg["mounts"]}["/dev/shm"]["options"]
    profile = ('{"defaultAction": "SCMP_ACT_ERRNO", "archMap": [{"architecture": "SCMP_ARCH_X86_64"}], '
               '"syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}, '
               '{"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_PTRACE"]}}]}')
    cfg = _config(options.Options(seccomp_profile=profile))
    assert [r["names"] for r in cfg["linux"]["seccomp"]["syscalls"]] == [["read", "write"]]
    with pytest.raises(errors.InvalidArgument, match="invalid seccomp profile"):
        _config(options.Options(seccomp_profile='{"defaultAction": "SCMP_ACT_TRACE"}'))


def test_cli_parses_ulimits_restart_and_sizes() -> None:
    u = lifecycle.parse_ulimit("nofile=100:200")
    assert (u.name, u.soft, u.hard) == ("nofile", 100, 200)
    assert lifecycle.parse_ulimit("nproc=5").hard == 5
    with pytest.raises(exits.Usage):
        lifecycle.parse_ulimit("nofile")
    r = lifecycle.parse_restart("on-failure:3")
    assert (r.name, r.maximum_retry_count) == ("on-failure", 3)
    with pytest.raises(exits.Usage, match="invalid restart policy format"):
        lifecycle.parse_restart("always:3")
    host = types_pb2.HostConfig()
    args = argparse.Namespace(cpus="1.5", cpu_shares=0, cpuset_cpus="", memory_swap="-1", memory_reservation="32m",
                              blkio_weight=0, restart="no", cap_add=[], cap_drop=[], privileged=False,
                              security_opt=[], read_only=False, tmpfs=["/run:size=1m", "/tmp"], shm_size="1g",
                              ulimit=[], sysctl=["net.ipv4.ip_forward=1"])
    lifecycle.apply_run_flags(host, args)
    assert (host.nano_cpus, host.memory_swap, host.memory_reservation, host.shm_size) == (
        1_500_000_000, -1, 32 << 20, 1 << 30)
    assert dict(host.tmpfs) == {"/run": "size=1m", "/tmp": ""}


def test_stats_row_is_dockers() -> None:
    s = types_pb2.ContainerStats(id="a" * 64, name="web", cpu_usage_ns=300, pre_cpu_usage_ns=100,
                                 system_cpu_usage_ns=2000, pre_system_cpu_usage_ns=1000, online_cpus=2,
                                 memory_usage=1 << 20, memory_limit=64 << 20, net_rx_bytes=1500,
                                 net_tx_bytes=0, block_read_bytes=0, block_write_bytes=4096, pids=3)
    assert lifecycle.stats_row(s) == ["a" * 12, "web", "40.00%", "1MiB / 64MiB", "1.56%", "1.5kB / 0B",
                                      "0B / 4.1kB", "3"]
