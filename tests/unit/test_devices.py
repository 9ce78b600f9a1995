"""The device rules and the eBPF program generated from them, run by a small interpreter."""

from __future__ import annotations

import itertools
import struct

import pytest

from skiff.common import errors
from skiff.execsvc import devices


def run_bpf(code: bytes, dev_type: int, access: int, major: int, minor: int) -> int:
    """Interprets the few eBPF instructions compile_program emits, on a bpf_cgroup_dev_ctx."""
    ctx = struct.pack("<III", (access << 16) | dev_type, major, minor)
    regs = [0] * 11
    insns = [struct.unpack("<BBhi", code[i:i + 8]) for i in range(0, len(code), 8)]
    pc = 0
    for _ in range(10_000):
        op, regbyte, off, imm = insns[pc]
        dst, src = regbyte & 15, regbyte >> 4
        pc += 1
        if op == 0x61:
            assert src == 1
            regs[dst] = struct.unpack_from("<I", ctx, off)[0]
        elif op == 0x54:
            regs[dst] = regs[dst] & (imm & 0xFFFFFFFF)
        elif op == 0x74:
            regs[dst] = (regs[dst] & 0xFFFFFFFF) >> imm
        elif op == 0xBC:
            regs[dst] = regs[src] & 0xFFFFFFFF
        elif op == 0xB7:
            regs[dst] = imm
        elif op == 0x55:
            pc += off if regs[dst] != imm else 0
        elif op == 0x15:
            pc += off if regs[dst] == imm else 0
        elif op == 0x45:
            pc += off if regs[dst] & imm else 0
        elif op == 0x95:
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {op:#x}")
    raise AssertionError("no exit")


def reference(rules: list[devices.Rule], kind: str, access: str, major: int, minor: int) -> int:
    """The OCI semantics: the last rule that matches decides; none: deny."""
    verdict = 0
    for r in rules:
        if r["type"] not in ("a", kind) or r["major"] not in (None, major) or r["minor"] not in (None, minor):
            continue
        if r["allow"] and set(access) <= set(r["access"]):
            verdict = 1
        elif not r["allow"] and set(access) & set(r["access"]):
            verdict = 0
    return verdict


ACCESS = {"m": 1, "r": 2, "w": 4}
RULESETS = [
    devices.default_rules(),
    devices.privileged_rules(),
    [devices.rule(False, "a", None, None, "rwm"), devices.rule(True, "c", 1, 3, "r"),
     devices.rule(True, "b", 8, None, "rw"), devices.rule(False, "c", 1, 3, "w")],
    [devices.rule(True, "c", 1, None, "rwm"), devices.rule(False, "c", 1, 5, "rwm")],
]


@pytest.mark.parametrize("rules", RULESETS)
def test_program_matches_the_rules(rules: list[devices.Rule]) -> None:
    code = devices.compile_program(rules)
    for kind, major, minor in itertools.product("cb", (1, 5, 7, 8, 136, 10), (0, 1, 2, 3, 5, 9, 200)):
        for access in ("m", "r", "w", "rw", "rwm"):
            mask = sum(ACCESS[a] for a in access)
            got = run_bpf(code, 2 if kind == "c" else 1, mask, major, minor)
            assert got == reference(rules, kind, access, major, minor), (kind, major, minor, access)


def test_docker_defaults() -> None:
    code = devices.compile_program(devices.default_rules())
    assert run_bpf(code, 2, 6, 1, 3) == 1  # /dev/null rw
    assert run_bpf(code, 2, 6, 136, 4) == 1  # a pts
    assert run_bpf(code, 1, 1, 8, 0) == 1  # mknod of a disk: allowed, as in Docker
    assert run_bpf(code, 1, 2, 8, 0) == 0  # reading it: not
    assert run_bpf(code, 2, 2, 10, 237) == 0


def test_v1_lines(tmp_path) -> None:
    for name in ("devices.allow", "devices.deny"):
        (tmp_path / name).write_text("")
    rules = devices.default_rules()
    assert [devices._v1_line(r) for r in rules[:4]] == ["a", "c *:* m", "b *:* m", "c 1:3 rwm"]
    devices.apply_v1(tmp_path, rules)  # the last line written to each file stays in the fixture
    assert (tmp_path / "devices.deny").read_text() == "a"
    assert (tmp_path / "devices.allow").read_text() == "c 10:200 rwm"
    assert devices._v1_line(devices.rule(True, "c", 136, None, "rwm")) == "c 136:* rwm"


def test_device_mapping_validation() -> None:
    with pytest.raises(errors.InvalidArgument, match="bad mode"):
        devices.DeviceMapping("/dev/null", "/dev/x", "rwx").validate()
    with pytest.raises(errors.InvalidArgument, match="not an absolute path"):
        devices.DeviceMapping("dev/null").validate()
    nodes, rules = devices.resolve((devices.DeviceMapping("/dev/null", "/dev/mynull", "r"),))
    assert nodes[0]["path"] == "/dev/mynull" and (nodes[0]["major"], nodes[0]["minor"]) == (1, 3)
    assert rules == [devices.rule(True, "c", 1, 3, "r")]
