"""The seccomp profile and its BPF compiler, run through a small classic-BPF interpreter."""

from __future__ import annotations

import struct

import pytest

from skiff.execsvc import security as sec

ALLOW, KILL = sec.SECCOMP_RET_ALLOW, sec.SECCOMP_RET_KILL_PROCESS
EPERM, ENOSYS = sec.SECCOMP_RET_ERRNO | 1, sec.SECCOMP_RET_ERRNO | 38


def run_bpf(prog: list[sec.Insn], nr: int, args: tuple[int, ...] = (), arch: int = sec.AUDIT_ARCH_X86_64) -> int:
    """Executes ``prog`` on a struct seccomp_data; only the instructions the compiler emits."""
    a6 = (list(args) + [0] * 6)[:6]
    data = struct.pack("<IIQ6Q", nr, arch, 0x1234, *a6)
    acc, pc, steps = 0, 0, 0
    while True:
        steps += 1
        assert steps <= len(prog), "a classic BPF program only jumps forward"
        code, jt, jf, k = prog[pc]
        pc += 1
        if code == sec.BPF_LD_W_ABS:
            acc = struct.unpack_from("<I", data, k)[0]
        elif code == sec.BPF_ALU_AND_K:
            acc &= k
        elif code in (sec.BPF_JEQ_K, sec.BPF_JGT_K, sec.BPF_JGE_K):
            cond = {sec.BPF_JEQ_K: acc == k, sec.BPF_JGT_K: acc > k, sec.BPF_JGE_K: acc >= k}[code]
            pc += jt if cond else jf
        elif code == sec.BPF_RET_K:
            return k
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
        assert pc < len(prog), "fell off the end of the program"


@pytest.fixture(scope="module")
def prog() -> list[sec.Insn]:
    return sec.compile_bpf(sec.default_seccomp_profile())


def nr(name: str) -> int:
    return sec.SYSCALLS[name]


def test_program_is_well_formed(prog: list[sec.Insn]) -> None:
    assert 0 < len(prog) <= 4096
    assert prog[-1][0] == sec.BPF_RET_K
    for i, (code, jt, jf, k) in enumerate(prog):
        assert 0 <= jt <= 255 and 0 <= jf <= 255 and 0 <= k <= 0xFFFFFFFF
        if code != sec.BPF_RET_K:
            assert i + 1 + max(jt, jf) < len(prog)


def test_known_numbers() -> None:
    assert (nr("read"), nr("execve"), nr("clone"), nr("unshare"), nr("pivot_root")) == (0, 59, 56, 272, 155)
    assert (nr("io_uring_setup"), nr("clone3"), nr("set_mempolicy_home_node")) == (425, 435, 450)


@pytest.mark.parametrize(
    "name", ["read", "write", "openat", "execve", "exit_group", "wait4", "chown", "setuid", "socket", "ptrace",
             "rt_sigaction", "mmap", "getrandom", "pidfd_open", "close_range", "chroot", "mknod"],
)
def test_ordinary_syscalls_are_allowed(prog: list[sec.Insn], name: str) -> None:
    assert run_bpf(prog, nr(name)) == ALLOW


@pytest.mark.parametrize(
    "name", ["mount", "umount2", "pivot_root", "unshare", "setns", "keyctl", "add_key", "request_key",
             "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot", "swapon",
             "swapoff", "bpf", "perf_event_open", "acct", "settimeofday", "clock_settime", "open_by_handle_at",
             "name_to_handle_at", "userfaultfd", "lookup_dcookie", "quotactl", "iopl", "ioperm", "fsopen",
             "open_tree", "io_uring_setup", "sethostname"],
)
def test_dangerous_syscalls_fail_with_eperm(prog: list[sec.Insn], name: str) -> None:
    assert run_bpf(prog, nr(name)) == EPERM


def test_clone_only_without_new_namespaces(prog: list[sec.Insn]) -> None:
    sigchld = 17
    assert run_bpf(prog, nr("clone"), (sigchld,)) == ALLOW
    assert run_bpf(prog, nr("clone"), (0x003D0F00 | sigchld,)) == ALLOW  # pthread_create's flags
    for flag in (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000):
        assert run_bpf(prog, nr("clone"), (flag | sigchld,)) == EPERM, hex(flag)


def test_clone3_is_enosys_so_libc_falls_back(prog: list[sec.Insn]) -> None:
    assert run_bpf(prog, nr("clone3")) == ENOSYS


def test_personality_only_listed_values(prog: list[sec.Insn]) -> None:
    for v in sec.PERSONALITY_ALLOWED:
        assert run_bpf(prog, nr("personality"), (v,)) == ALLOW
    assert run_bpf(prog, nr("personality"), (0x0040000,)) == EPERM  # READ_IMPLIES_EXEC
    assert run_bpf(prog, nr("personality"), (1 << 32,)) == EPERM  # the high word counts too


def test_foreign_arch_and_x32_are_killed(prog: list[sec.Insn]) -> None:
    assert run_bpf(prog, nr("read"), arch=0x40000003) == KILL  # AUDIT_ARCH_I386
    assert run_bpf(prog, sec.X32_SYSCALL_BIT | nr("read")) == KILL


def test_unknown_numbers(prog: list[sec.Insn]) -> None:
    assert run_bpf(prog, 400) == EPERM  # a hole in the table
    assert run_bpf(prog, sec.MAX_SYSCALL + 1) == ENOSYS  # newer than the table: libc falls back
    assert run_bpf(prog, 0xFFFFFFFF) == KILL  # -1 has the x32 bit set


def test_every_table_entry_is_decided_as_the_profile_says(prog: list[sec.Insn]) -> None:
    special = {"clone", "clone3", "personality"}
    for name, n in sec.SYSCALLS.items():
        if name in special:
            continue
        want = EPERM if name in sec.DENIED_SYSCALLS else ALLOW
        assert run_bpf(prog, n) == want, name


def test_rules_compile_conditions_and_actions() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["write"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5,
             "args": [{"index": 2, "value": 7, "op": "SCMP_CMP_EQ"}]},
            {"names": ["kill"], "action": "SCMP_ACT_KILL"},
            {"names": ["no_such_syscall"], "action": "SCMP_ACT_KILL"},
        ],
    }
    p = sec.compile_bpf(profile)
    assert run_bpf(p, nr("write"), (1, 0, 7)) == sec.SECCOMP_RET_ERRNO | 5
    assert run_bpf(p, nr("write"), (1, 0, 8)) == ALLOW
    assert run_bpf(p, nr("kill")) == KILL
    assert run_bpf(p, nr("read")) == ALLOW
    with pytest.raises(ValueError, match="operator"):
        sec.compile_bpf({"defaultAction": "SCMP_ACT_ALLOW",
                         "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",
                                       "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_GT"}]}]})
    with pytest.raises(ValueError, match="X86_64"):
        sec.compile_bpf({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_AARCH64"]})
