"""The device cgroup: which device nodes a container may create, read and write.

Docker's default: deny everything, then allow ``mknod`` of any character or block
device (the node is useless without read/write) and read/write/mknod of the
standard character devices (null, zero, full, random, urandom, tty, console,
ptmx, the pts devices, tun). ``--device`` adds a node and a rule for it;
``--privileged`` allows everything. The rules are OCI ``linux.resources.devices``
entries (``allow``, ``type`` a/c/b, ``major``/``minor`` (None: any), ``access``),
evaluated in order with the last matching rule deciding.

Enforcement: cgroup v1 writes ``devices.deny``/``devices.allow``; cgroup v2 has no
device files, so an eBPF program (``BPF_PROG_TYPE_CGROUP_DEVICE``) generated from
the same rules is loaded and attached to the container's cgroup with ``bpf(2)``.
Everything is done from execsvc before the container's init joins the cgroup.
"""

from __future__ import annotations

import ctypes
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skiff.common.errors import Internal, InvalidArgument

Rule = dict[str, Any]


def rule(allow: bool, kind: str, major: int | None, minor: int | None, access: str) -> Rule:
    return {"allow": allow, "type": kind, "major": major, "minor": minor, "access": access}


#: (major, minor) of the character devices every container may use, as Docker's defaults.
STANDARD = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9),
            "tty": (5, 0), "console": (5, 1), "ptmx": (5, 2), "pts/*": (136, None), "net/tun": (10, 200)}


def default_rules() -> list[Rule]:
    rules = [rule(False, "a", None, None, "rwm"), rule(True, "c", None, None, "m"), rule(True, "b", None, None, "m")]
    rules += [rule(True, "c", major, minor, "rwm") for major, minor in STANDARD.values()]
    return rules


def privileged_rules() -> list[Rule]:
    return [rule(True, "a", None, None, "rwm")]


# --- --device ------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceMapping:
    path_on_host: str
    path_in_container: str = ""
    permissions: str = "rwm"

    def validate(self) -> None:
        if not self.path_on_host.startswith("/"):
            raise InvalidArgument(f"{self.path_on_host} is not an absolute path")
        if self.path_in_container and not self.path_in_container.startswith("/"):
            raise InvalidArgument(f"{self.path_in_container} is not an absolute path")
        if not self.permissions or set(self.permissions) - set("rwm"):
            raise InvalidArgument(f"bad mode specified: {self.permissions}")


def resolve(mappings: tuple[DeviceMapping, ...]) -> tuple[list[dict[str, Any]], list[Rule]]:
    """(OCI ``linux.devices`` nodes, their rules) from the host's device nodes; a directory gives
    every device under it (as Docker). InvalidArgument with Docker's message otherwise."""
    nodes: list[dict[str, Any]] = []
    rules: list[Rule] = []
    for m in mappings:
        m.validate()
        dest_root = m.path_in_container or m.path_on_host
        try:
            st = os.stat(m.path_on_host)
        except OSError as e:
            raise InvalidArgument(f"error gathering device information while adding custom device "
                                  f"{m.path_on_host!r}: {e.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            found = []
            for parent, _dirs, files in os.walk(m.path_on_host):
                for name in sorted(files):
                    host = os.path.join(parent, name)
                    found.append((host, os.path.join(dest_root, os.path.relpath(host, m.path_on_host))))
        else:
            found = [(m.path_on_host, dest_root)]
        for host, dest in found:
            try:
                st = os.stat(host)
            except OSError:
                continue
            if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
                if host == m.path_on_host:
                    raise InvalidArgument(f"error gathering device information while adding custom device "
                                          f"{m.path_on_host!r}: not a device node")
                continue
            kind = "c" if stat.S_ISCHR(st.st_mode) else "b"
            major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
            nodes.append({"path": dest, "type": kind, "major": major, "minor": minor,
                          "fileMode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid})
            rules.append(rule(True, kind, major, minor, m.permissions))
    return nodes, rules


def apply_config(cfg: dict[str, Any], mappings: tuple[DeviceMapping, ...], privileged: bool) -> dict[str, Any]:
    """Fills ``linux.devices`` and ``linux.resources.devices`` of config.json."""
    nodes, extra = resolve(mappings)
    cfg["linux"]["devices"] = nodes
    cfg["linux"]["resources"]["devices"] = privileged_rules() if privileged else default_rules() + extra
    return cfg


# --- cgroup v1 ---------------------------------------------------------------------------


def _v1_line(r: Rule) -> str:
    def num(n: int | None) -> str:
        return "*" if n is None else str(n)
    if r["type"] == "a":
        return "a"
    return f"{r['type']} {num(r['major'])}:{num(r['minor'])} {r['access']}"


def apply_v1(group: Path, rules: list[Rule]) -> None:
    """Rewrites the group's device list: the kernel keeps an allow-list below a "deny a"."""
    for r in rules:
        target = group / ("devices.allow" if r["allow"] else "devices.deny")
        try:
            target.write_text(_v1_line(r))
        except OSError as e:
            raise Internal(f"{target}: {_v1_line(r)}: {e.strerror}") from e


# --- cgroup v2: an eBPF program ---------------------------------------------------------

BPF_PROG_LOAD, BPF_PROG_ATTACH = 5, 8
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
DEV_BLOCK, DEV_CHAR = 1, 2
ACC_MKNOD, ACC_READ, ACC_WRITE = 1, 2, 4
_SYS_BPF = 321  # x86_64

# eBPF opcodes used here
_LDX_W = 0x61  # dst = *(u32 *)(src + off)
_AND32_K, _RSH32_K, _MOV32_X, _MOV64_K = 0x54, 0x74, 0xBC, 0xB7
_JNE_K, _JEQ_K, _JSET_K, _EXIT = 0x55, 0x15, 0x45, 0x95


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def _access_bits(access: str) -> int:
    return (ACC_READ if "r" in access else 0) | (ACC_WRITE if "w" in access else 0) | (
        ACC_MKNOD if "m" in access else 0)


def compile_program(rules: list[Rule]) -> bytes:
    """The eBPF program for ``rules`` (last match wins; nothing matching: deny).

    Registers: r2 device type, r3 requested access, r4 major, r5 minor (from
    ``struct bpf_cgroup_dev_ctx``); the rules are tested newest first and the
    first that matches returns its verdict.
    """
    prog = [
        _insn(_LDX_W, 2, 1, 0),
        _insn(_AND32_K, 2, imm=0xFFFF),
        _insn(_LDX_W, 3, 1, 0),
        _insn(_RSH32_K, 3, imm=16),
        _insn(_LDX_W, 4, 1, 4),
        _insn(_LDX_W, 5, 1, 8),
    ]
    for r in reversed(rules):
        acc = _access_bits(r["access"])
        block: list[Any] = []  # ("raw", insn) or ("jmp", code, dst, imm): to the next rule when taken
        if r["type"] in ("c", "b"):
            block.append(("jmp", _JNE_K, 2, DEV_CHAR if r["type"] == "c" else DEV_BLOCK))
        if r["allow"]:
            if ~acc & 7:  # asks for something the rule does not give
                block.append(("jmp", _JSET_K, 3, ~acc & 7))
        else:
            if acc != 7:  # asks for none of what the rule denies
                block.append(("raw", _insn(_MOV32_X, 0, 3)))
                block.append(("raw", _insn(_AND32_K, 0, imm=acc)))
                block.append(("jmp", _JEQ_K, 0, 0))
        if r["major"] is not None:
            block.append(("jmp", _JNE_K, 4, r["major"]))
        if r["minor"] is not None:
            block.append(("jmp", _JNE_K, 5, r["minor"]))
        block.append(("raw", _insn(_MOV64_K, 0, imm=1 if r["allow"] else 0)))
        block.append(("raw", _insn(_EXIT)))
        for i, item in enumerate(block):
            if item[0] == "raw":
                prog.append(item[1])
            else:
                _, code, dst, imm = item
                prog.append(_insn(code, dst, off=len(block) - i - 1, imm=imm))  # to the next rule
        if all(item[0] == "raw" for item in block):
            return b"".join(prog)  # matches everything: older rules can never decide (the verifier
            # refuses unreachable code)
    prog += [_insn(_MOV64_K, 0, imm=0), _insn(_EXIT)]
    return b"".join(prog)


def _bpf(cmd: int, attr: bytes) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(attr, len(attr))
    rc = libc.syscall(_SYS_BPF, cmd, buf, len(attr))
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(rc)


def load_program(code: bytes) -> int:
    """BPF_PROG_LOAD of a cgroup device program; returns its fd."""
    insns = ctypes.create_string_buffer(code, len(code))
    license_ = ctypes.create_string_buffer(b"Apache-2.0")  # no GPL-only helpers are used
    log = ctypes.create_string_buffer(65536)
    attr = struct.pack("<IIQQIIQII16s", BPF_PROG_TYPE_CGROUP_DEVICE, len(code) // 8,
                       ctypes.addressof(insns), ctypes.addressof(license_), 1, len(log),
                       ctypes.addressof(log), 0, 0, b"skiff_devices")
    try:
        return _bpf(BPF_PROG_LOAD, attr.ljust(128, b"\0"))
    except OSError as e:
        detail = log.value.decode(errors="replace").strip().splitlines()[-3:]
        raise Internal(f"loading the device cgroup program: {e.strerror} {' | '.join(detail)}") from e


def attach_program(group: Path, prog_fd: int) -> None:
    """Attaches (replacing an earlier one: a restarted container) to the cgroup ``group``."""
    cg = os.open(group, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _bpf(BPF_PROG_ATTACH, struct.pack("<IIIII", cg, prog_fd, BPF_CGROUP_DEVICE, 0, 0).ljust(128, b"\0"))
    except OSError as e:
        raise Internal(f"attaching the device cgroup program to {group}: {e.strerror}") from e
    finally:
        os.close(cg)


def apply_v2(group: Path, rules: list[Rule]) -> None:
    fd = load_program(compile_program(rules))
    try:
        attach_program(group, fd)
    finally:
        os.close(fd)  # the cgroup keeps the program


def apply(cgroups: Any, cid: str, rules: list[Rule]) -> None:
    """Puts ``rules`` in force on the container's cgroup (before anything joins it)."""
    if not rules:
        return
    if cgroups.version == 2:
        apply_v2(Path(cgroups.root) / cgroups.parent / cid, rules)
        return
    mount = getattr(cgroups, "mounts", {}).get("devices")
    if mount is not None:
        apply_v1(Path(mount) / cgroups.parent / cid, rules)
