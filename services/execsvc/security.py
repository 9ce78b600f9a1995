"""Docker's security defaults for every container: capabilities, masked and
read-only paths, and the default seccomp profile compiled to classic BPF.

Host side and pure: ``spec.py`` puts the OCI-shaped values into config.json
(``process.capabilities``, ``linux.maskedPaths``, ``linux.readonlyPaths``,
``linux.seccomp``) and the compiled filter under ``skiff.seccompFilter``, so
the init only has to hand the instructions to the kernel.

The seccomp profile is an allow-list in Docker's spirit: every x86_64 syscall
this table knows is allowed except the ones below (namespaces, mounts, keys,
modules, clocks, reboot, swap, BPF, perf, handles, io_uring, ...); ``clone``
only without CLONE_NEW* flags, ``personality`` only for a few values, ``clone3``
fails with ENOSYS so libc falls back to ``clone``. Any other number fails with
EPERM, except numbers newer than the table, which fail with ENOSYS (runc's rule:
libc then falls back to an older syscall). A foreign architecture, or the x32
ABI, kills the process.
"""

from __future__ import annotations

from typing import Any


def _words(text: str) -> list[str]:
    return text.split()

#: Capability numbers (linux/capability.h).
CAPS = {
    name: n
    for n, name in enumerate(
        _words(
            """CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE
        NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO SYS_CHROOT
        SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE
        AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ
        PERFMON BPF CHECKPOINT_RESTORE"""
        )
    )
}

#: Docker's default capabilities (moby oci/caps/defaults.go), in its order.
DEFAULT_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
)  # fmt: skip

#: Docker's masked paths: /dev/null over files, an empty read-only tmpfs over directories.
MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)  # fmt: skip
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


def cap_mask(names: list[str] | tuple[str, ...]) -> int:
    """The kernel's bit mask for ``CAP_*`` names, as /proc/<pid>/status prints it."""
    mask = 0
    for name in names:
        mask |= 1 << CAPS[name.removeprefix("CAP_")]
    return mask


def default_capabilities() -> dict[str, list[str]]:
    """OCI ``process.capabilities``: nothing inheritable or ambient (moby after CVE-2022-24769)."""
    caps = list(DEFAULT_CAPS)
    return {"bounding": caps, "effective": caps, "permitted": caps, "inheritable": [], "ambient": []}


# x86_64 syscall numbers (asm/unistd_64.h): 0..334 and 424..450 are contiguous.
_SYSCALLS_0 = _words(
    """
    read write open close stat fstat lstat poll lseek mmap mprotect munmap brk rt_sigaction rt_sigprocmask
    rt_sigreturn ioctl pread64 pwrite64 readv writev access pipe select sched_yield mremap msync mincore
    madvise shmget shmat shmctl dup dup2 pause nanosleep getitimer alarm setitimer getpid sendfile socket
    connect accept sendto recvfrom sendmsg recvmsg shutdown bind listen getsockname getpeername socketpair
    setsockopt getsockopt clone fork vfork execve exit wait4 kill uname semget semop semctl shmdt msgget msgsnd
    msgrcv msgctl fcntl flock fsync fdatasync truncate ftruncate getdents getcwd chdir fchdir rename mkdir
    rmdir creat link unlink symlink readlink chmod fchmod chown fchown lchown umask gettimeofday getrlimit
    getrusage sysinfo times ptrace getuid syslog getgid setuid setgid geteuid getegid setpgid getppid getpgrp
    setsid setreuid setregid getgroups setgroups setresuid getresuid setresgid getresgid getpgid setfsuid
    setfsgid getsid capget capset rt_sigpending rt_sigtimedwait rt_sigqueueinfo rt_sigsuspend sigaltstack utime
    mknod uselib personality ustat statfs fstatfs sysfs getpriority setpriority sched_setparam sched_getparam
    sched_setscheduler sched_getscheduler sched_get_priority_max sched_get_priority_min sched_rr_get_interval
    mlock munlock mlockall munlockall vhangup modify_ldt pivot_root _sysctl prctl arch_prctl adjtimex setrlimit
    chroot sync acct settimeofday mount umount2 swapon swapoff reboot sethostname setdomainname iopl ioperm
    create_module init_module delete_module get_kernel_syms query_module quotactl nfsservctl getpmsg putpmsg
    afs_syscall tuxcall security gettid readahead setxattr lsetxattr fsetxattr getxattr lgetxattr fgetxattr
    listxattr llistxattr flistxattr removexattr lremovexattr fremovexattr tkill time futex sched_setaffinity
    sched_getaffinity set_thread_area io_setup io_destroy io_getevents io_submit io_cancel get_thread_area
    lookup_dcookie epoll_create epoll_ctl_old epoll_wait_old remap_file_pages getdents64 set_tid_address
    restart_syscall semtimedop fadvise64 timer_create timer_settime timer_gettime timer_getoverrun timer_delete
    clock_settime clock_gettime clock_getres clock_nanosleep exit_group epoll_wait epoll_ctl tgkill utimes
    vserver mbind set_mempolicy get_mempolicy mq_open mq_unlink mq_timedsend mq_timedreceive mq_notify
    mq_getsetattr kexec_load waitid add_key request_key keyctl ioprio_set ioprio_get inotify_init
    inotify_add_watch inotify_rm_watch migrate_pages openat mkdirat mknodat fchownat futimesat newfstatat
    unlinkat renameat linkat symlinkat readlinkat fchmodat faccessat pselect6 ppoll unshare set_robust_list
    get_robust_list splice tee sync_file_range vmsplice move_pages utimensat epoll_pwait signalfd
    timerfd_create eventfd fallocate timerfd_settime timerfd_gettime accept4 signalfd4 eventfd2 epoll_create1
    dup3 pipe2 inotify_init1 preadv pwritev rt_tgsigqueueinfo perf_event_open recvmmsg fanotify_init
    fanotify_mark prlimit64 name_to_handle_at open_by_handle_at clock_adjtime syncfs sendmmsg setns getcpu
    process_vm_readv process_vm_writev kcmp finit_module sched_setattr sched_getattr renameat2 seccomp
    getrandom memfd_create kexec_file_load bpf execveat userfaultfd membarrier mlock2 copy_file_range preadv2
    pwritev2 pkey_mprotect pkey_alloc pkey_free statx io_pgetevents rseq
"""
)
_SYSCALLS_424 = _words(
    """
    pidfd_send_signal io_uring_setup io_uring_enter io_uring_register open_tree move_mount fsopen fsconfig
    fsmount fspick pidfd_open clone3 close_range openat2 pidfd_getfd faccessat2 process_madvise epoll_pwait2
    mount_setattr quotactl_fd landlock_create_ruleset landlock_add_rule landlock_restrict_self memfd_secret
    process_mrelease futex_waitv set_mempolicy_home_node
"""
)
SYSCALLS = {name: n for n, name in enumerate(_SYSCALLS_0)} | {name: 424 + n for n, name in enumerate(_SYSCALLS_424)}
MAX_SYSCALL = max(SYSCALLS.values())

#: Not in Docker's default allow-list (or only with a capability Docker does not grant).
DENIED_SYSCALLS = frozenset(
    _words(
    """
    acct add_key bpf clock_adjtime clock_settime create_module delete_module fanotify_init finit_module
    fsconfig fsmount fsopen fspick get_kernel_syms init_module io_uring_enter io_uring_register io_uring_setup
    ioperm iopl kexec_file_load kexec_load keyctl lookup_dcookie mount mount_setattr move_mount
    name_to_handle_at nfsservctl open_by_handle_at open_tree perf_event_open pivot_root query_module quotactl
    quotactl_fd reboot request_key setdomainname sethostname setns settimeofday swapoff swapon _sysctl sysfs
    syslog umount2 unshare uselib userfaultfd ustat vhangup
    afs_syscall tuxcall security vserver putpmsg getpmsg epoll_ctl_old epoll_wait_old
    """
    )
)
#: Every CLONE_NEW* flag that fits clone's flags word (Docker's mask, 2114060288).
CLONE_NEW_MASK = 0x7E020000
#: personality(2) values Docker allows: PER_LINUX, UNAME26, PER_LINUX32, PER_LINUX32|UNAME26, query.
PERSONALITY_ALLOWED = (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)
EPERM, ENOSYS = 1, 38


def default_seccomp_profile() -> dict[str, Any]:
    """Docker's default profile, in the OCI ``linux.seccomp`` shape."""
    special = {"clone", "clone3", "personality"}
    allowed = sorted(n for n in SYSCALLS if n not in DENIED_SYSCALLS and n not in special)
    rules: list[dict[str, Any]] = [
        {"names": allowed, "action": "SCMP_ACT_ALLOW"},
        {
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": CLONE_NEW_MASK, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
        },
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
    ]
    rules += [
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"}]}
        for v in PERSONALITY_ALLOWED
    ]
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": rules,
    }


# Classic BPF (linux/filter.h, linux/seccomp.h, linux/audit.h).
BPF_LD_W_ABS = 0x20
BPF_ALU_AND_K = 0x54
BPF_JEQ_K = 0x15
BPF_JGT_K = 0x25
BPF_JGE_K = 0x35
BPF_RET_K = 0x06
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
#: struct seccomp_data offsets: nr, arch, args[i] (little endian: low word first).
OFF_NR, OFF_ARCH, OFF_ARGS = 0, 4, 16

Insn = tuple[int, int, int, int]  # (code, jt, jf, k), as struct sock_filter


def _action(rule: dict[str, Any], profile: dict[str, Any]) -> int:
    action = rule["action"]
    if action == "SCMP_ACT_ALLOW":
        return SECCOMP_RET_ALLOW
    if action == "SCMP_ACT_ERRNO":
        return SECCOMP_RET_ERRNO | (rule.get("errnoRet", profile.get("defaultErrnoRet", EPERM)) & 0xFFFF)
    if action in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS"):
        return SECCOMP_RET_KILL_PROCESS
    raise ValueError(f"unsupported seccomp action {action}")


def _rule(args: list[dict[str, Any]], ret: int) -> list[Insn]:
    """All ``args`` conditions (AND) then RET ``ret``; a failed condition jumps past the RET."""
    conds: list[tuple[int, int, int]] = []  # (offset, mask, value) per 32-bit word
    for a in args:
        if a["op"] == "SCMP_CMP_EQ":
            mask, value = 0xFFFFFFFFFFFFFFFF, a["value"]
        elif a["op"] == "SCMP_CMP_MASKED_EQ":
            mask, value = a["value"], a.get("valueTwo", 0)
        else:
            raise ValueError(f"unsupported seccomp operator {a['op']}")
        off = OFF_ARGS + 8 * a["index"]
        conds += [(off + 4, mask >> 32, value >> 32), (off, mask & 0xFFFFFFFF, value & 0xFFFFFFFF)]
    length = 3 * len(conds) + 1
    out: list[Insn] = []
    for off, mask, value in conds:
        out += [(BPF_LD_W_ABS, 0, 0, off), (BPF_ALU_AND_K, 0, 0, mask)]
        out.append((BPF_JEQ_K, 0, length - len(out) - 1, value))  # false: just past the RET
    out.append((BPF_RET_K, 0, 0, ret))
    return out


def _ranges(numbers: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for n in sorted(numbers):
        if out and out[-1][1] == n - 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return out


def compile_bpf(profile: dict[str, Any]) -> list[Insn]:
    """The profile as a classic BPF program for SECCOMP_SET_MODE_FILTER (x86_64 only).

    Layout: check the architecture (else kill); load the number; x32 ABI -> kill;
    newer than the table -> ENOSYS; each syscall with conditional or non-allow rules
    as its own block; the unconditionally allowed ones as number ranges; the default.
    """
    if profile.get("architectures", ["SCMP_ARCH_X86_64"]) != ["SCMP_ARCH_X86_64"]:
        raise ValueError("only SCMP_ARCH_X86_64 is supported")
    default = _action({"action": profile["defaultAction"]}, profile)
    plain: set[int] = set()
    special: dict[int, list[dict[str, Any]]] = {}
    for rule in profile.get("syscalls", []):
        for name in rule["names"]:
            nr = SYSCALLS.get(name)
            if nr is None:
                continue  # unknown on this architecture, as libseccomp does
            if rule["action"] == "SCMP_ACT_ALLOW" and not rule.get("args") and nr not in special:
                plain.add(nr)
            else:
                special.setdefault(nr, []).append(rule)
    prog: list[Insn] = [
        (BPF_LD_W_ABS, 0, 0, OFF_ARCH),
        (BPF_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        (BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),
        (BPF_LD_W_ABS, 0, 0, OFF_NR),
        (BPF_JGE_K, 0, 1, X32_SYSCALL_BIT),
        (BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),
        (BPF_JGT_K, 0, 1, MAX_SYSCALL),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | ENOSYS),
    ]
    for nr in sorted(special):
        block: list[Insn] = []
        for rule in special[nr]:
            block += _rule(rule.get("args", []), _action(rule, profile))
            if not rule.get("args"):
                break  # unconditional: later rules are unreachable
        else:
            block.append((BPF_RET_K, 0, 0, default))
        if len(block) > 255:
            raise ValueError(f"too many rules for syscall {nr}")
        prog.append((BPF_JEQ_K, 0, len(block), nr))
        prog += block
    for lo, hi in _ranges(sorted(plain - set(special))):
        prog += [(BPF_JGE_K, 0, 2, lo), (BPF_JGT_K, 1, 0, hi), (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW)]
    prog.append((BPF_RET_K, 0, 0, default))
    if len(prog) > 4096:
        raise ValueError("seccomp program longer than BPF_MAXINSNS")
    return prog
