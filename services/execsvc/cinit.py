"""``init.conf``: the bundle's config for the container init in C (shim/cinit.c).

The common case (no terminal, no user mounts, ...) is set up by the shim's cloned child in
C, without starting a Python interpreter; everything else still runs ``init.py``. At each
start execsvc writes ``init.conf`` when :func:`unsupported` finds nothing in the config the C
path leaves to init.py, and removes it otherwise. ``$SKIFF_INIT=python`` (on execsvc)
forces init.py for every container.

Format (parsed by cinit.c): one ``key=value`` per line; a value's fields are split by TAB,
and ``\\``, newline and TAB in a field are escaped as ``\\\\``, ``\\n``, ``\\t``. The mount
options are split into flags and data here, the capability sets are bitmasks, the seccomp
program is the hex of its ``struct sock_filter`` array, the environment is de-duplicated as
init.py's ``dict`` of it would be.
"""

from __future__ import annotations

import resource
import struct
import threading
from pathlib import Path
from typing import Any

from skiff.execsvc.init import CAP_NAMES, MS_BIND, MS_PRIVATE, MS_SLAVE, parse_options

#: bundle file the shim's child reads
INIT_CONF = "init.conf"


def unsupported(cfg: dict[str, Any]) -> str | None:
    """Why ``cfg`` needs init.py (a feature cinit.c does not have), or None for the C path."""
    proc, linux, skiff = cfg["process"], cfg.get("linux", {}), cfg.get("skiff", {})
    if proc.get("terminal"):
        return "terminal"
    if linux.get("uidMappings") or linux.get("gidMappings"):
        return "userns-remap"
    for ns in linux.get("namespaces", []):
        if ns["type"] == "user":
            return "user namespace"
        if ns.get("path") and ns["type"] != "network":  # the shim joins the netns itself
            return f"{ns['type']} namespace joined by path"
    if skiff.get("userMounts"):
        return "user mounts"
    if proc.get("user", {}).get("additionalGroups"):
        return "--group-add by name"
    if linux.get("devices"):
        return "devices"
    if skiff.get("privileged"):
        return "privileged"
    if skiff.get("rootfsMount", {}).get("type") not in ("overlay", "bind"):
        return "root filesystem type"
    for m in cfg.get("mounts", []):
        if m.get("skiffMountNamespace"):
            return "mount from another mount namespace"
    caps = proc.get("capabilities") or {}
    for names in caps.values():
        if any(n.removeprefix("CAP_") not in CAP_NAMES for n in names):
            return "unknown capability"  # init.py reports it
    for rl in proc.get("rlimits", []):
        if not isinstance(getattr(resource, rl["type"], None), int):
            return "unknown rlimit"  # init.py reports it
    if linux.get("rootfsPropagation") not in (None, "rprivate", "rslave"):
        return "root propagation"
    return None


def _esc(value: object) -> str:
    s = str(value)
    if "\0" in s:
        raise ValueError("NUL in a value")
    return s.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


def _line(key: str, *fields: object) -> str:
    return f"{key}=" + "\t".join(_esc(f) for f in fields)


def _mask(names: list[str]) -> int:
    out = 0
    for n in names:
        out |= 1 << CAP_NAMES.index(n.removeprefix("CAP_"))
    return out


def conf(cfg: dict[str, Any]) -> str | None:
    """The text of init.conf for ``cfg``; None when init.py must run (see :func:`unsupported`)."""
    if unsupported(cfg) is not None:
        return None
    proc, linux, skiff = cfg["process"], cfg.get("linux", {}), cfg["skiff"]
    try:
        lines = [_line("cgroup_procs", p) for p in skiff.get("cgroupProcs", [])]
        if any(ns["type"] == "cgroup" and not ns.get("path") for ns in linux.get("namespaces", [])):
            lines.append("cgroupns=1")
        prop = MS_SLAVE if linux.get("rootfsPropagation") == "rslave" else MS_PRIVATE
        lines.append(f"propagation={prop}")
        rm = skiff["rootfsMount"]
        lines.append(_line("rootfs", cfg["root"]["path"]))
        lines.append(_line("rootfs_mount", rm["type"], rm["source"], ",".join(rm["options"])))
        for m in cfg.get("mounts", []):
            flags, data = parse_options(m.get("options", []))
            kind = "" if m["type"] == "bind" or flags & MS_BIND else m["type"]
            lines.append(_line("mount", m["destination"], kind, m["source"], flags, data))
        lines += [_line("masked", p) for p in linux.get("maskedPaths", [])]
        lines += [_line("readonly", p) for p in linux.get("readonlyPaths", [])]
        lines += [_line("sysctl", k, v) for k, v in linux.get("sysctl", {}).items()]
        if cfg.get("hostname"):
            lines.append(_line("hostname", cfg["hostname"]))
        for rl in proc.get("rlimits", []):
            lines.append(_line("rlimit", getattr(resource, rl["type"]), rl["soft"], rl["hard"], rl["type"]))
        if "capabilities" in proc:
            caps = proc["capabilities"]
            lines.append(_line("caps", *(_mask(caps.get(k, []))
                                         for k in ("bounding", "effective", "permitted", "inheritable"))))
            lines += [_line("ambient", _mask([n]).bit_length() - 1, n) for n in caps.get("ambient", [])]
        if proc.get("noNewPrivileges"):
            lines.append("no_new_privs=1")
        insns = skiff.get("seccompFilter") or []
        if insns:
            lines.append("seccomp=" + b"".join(struct.pack("<HBBI", *i) for i in insns).hex())
        user = proc.get("user", {})
        lines.append(_line("uid", user.get("uid", 0)))
        if user.get("gid") is not None:
            lines.append(_line("gid", user["gid"]))
        if "username" in user:
            lines.append(_line("username", user["username"]))
        lines += [_line("additional_gid", g) for g in user.get("additionalGids", [])]
        lines.append(_line("cwd", proc.get("cwd") or "/"))
        if cfg["root"].get("readonly"):
            lines.append("readonly_root=1")
        lines += [_line("arg", a) for a in proc["args"]]
        env = dict(e.split("=", 1) for e in proc.get("env", []))
        lines += [_line("env", f"{k}={v}") for k, v in env.items()]
        if skiff.get("init"):
            lines.append(_line("init", skiff["init"]))
        text = "\n".join(lines) + "\n"
        text.encode()
    except (ValueError, KeyError, TypeError, UnicodeEncodeError):
        return None  # init.py reads what this cannot write (and reports what is wrong with it)
    return text


#: the v1 ``tasks`` file of the cgroup execsvc's threads are in (found once)
_tasks_file: list[str] = []


def _noop_migration(mounts: dict[str, Path]) -> None:
    tid = str(threading.get_native_id())
    try:
        if not _tasks_file:
            with open(f"/proc/self/task/{tid}/cgroup") as f:
                lines = f.read().splitlines()
            for line in lines:
                _, controllers, path = line.split(":", 2)
                found = [c for c in controllers.split(",") if c in mounts]
                if found:
                    _tasks_file.append(str(mounts[found[0]] / path.lstrip("/") / "tasks"))
                    break
        if _tasks_file:
            with open(_tasks_file[0], "w") as t:
                t.write(tid)
    except OSError:
        _tasks_file.clear()  # only an optimisation: found again next time


def prefetch_cgroup_sync(cgroups: object) -> threading.Thread | None:
    """cgroup v1: start the RCU grace period that the first move of a process into a cgroup
    waits for (~8 ms) now, so it passes while execsvc writes the bundle and the shim starts.
    A thread moves itself into the cgroup it is in (``tasks``, one hierarchy): nothing changes but
    the kernel's cgroup_threadgroup_rwsem, which then lets the monitor's move of the container's
    init (and the init's own join) through without a grace period of their own."""
    mounts = getattr(cgroups, "mounts", None)
    if getattr(cgroups, "version", 0) != 1 or not mounts:
        return None
    t = threading.Thread(target=_noop_migration, args=(mounts,), daemon=True, name="cgroup-prefetch")
    t.start()
    return t
