"""Joins a running container and execs a command in it (`skiff exec`).

Run by ``skiff-shim exec`` on the host as ``python3 -I -S exec_init.py <bundle>
<exec-id>``; reads ``<bundle>/config.json`` (the container's) and
``<bundle>/exec-<id>.json`` (written by execsvc: args, env, cwd, user). Nothing
from the container's filesystem is executed here: this is the host's Python,
every module is imported before the mount namespace is joined.

Order, and why:

1. non-dumpable first: nothing in the container may ptrace us or read our memory;
2. open the namespaces of the container's PID 1, then check its start time (a reused
   pid would give us another process's namespaces);
3. join the cgroup, then ipc, uts, net, pid (for our children only) and mnt (our root
   and cwd become the container's);
4. fork: only a child is in the pid namespace. We exit at once; the child is
   reparented to the shim's monitor (a child subreaper), which waits for it;
5. in the child, as the container's init does: rlimits, user, capabilities,
   no_new_privs, user switch, cwd, command lookup, close fds, seccomp, execve.

fd 3 is the close-on-exec sync pipe to the shim, as for init.py.
"""

import _socket  # noqa: F401  (init.setup_terminal, after the mount namespace is joined)
import ctypes
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import init  # the container init's helpers (stdlib only)

#: Joined in this order; mnt last (it changes our root).
NAMESPACES = (("ipc", 0x08000000), ("uts", 0x04000000), ("net", 0x40000000), ("pid", 0x20000000),
              ("cgroup", 0x02000000), ("mnt", 0x00020000))


def _starttime(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return int(data[data.rindex(b")") + 2:].split()[19])


def join(bundle, cfg):
    with open(os.path.join(bundle, "start.json"), "rb") as f:
        started = json.loads(f.read())
    pid = int(started["pid"])
    try:
        fds = [(os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC), name, flag)
               for name, flag in NAMESPACES]
        alive = _starttime(pid) == int(started["pid_starttime"])
    except OSError:
        alive = False
    if not alive:
        raise init.StartError("other", "the container is not running")
    userns = None
    if cfg.get("linux", {}).get("uidMappings"):  # --userns-remap: entered last, as the init does
        userns = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    init.join_cgroups(cfg["skiff"]["cgroupProcs"])
    for fd, name, flag in fds:
        init.check(init.libc.setns(fd, flag), f"setns {name}")
        os.close(fd)
    if userns is not None:
        init.enter_userns(userns)


def run_in_container(cfg, spec):
    """The process's set-up; the same steps and order as init.run after pivot_root."""
    init.set_rlimits(cfg)
    uid, gid, groups = init.resolve_user(spec["user"])
    if spec.get("terminal"):
        init.setup_terminal(uid, spec.get("consoleSize"))
    proc = cfg["process"]
    seccomp = init.seccomp_program(cfg)
    if uid == 0:
        init.switch_user(uid, gid, groups)  # groups while CAP_SETGID is still there
    if seccomp is not None and not proc.get("noNewPrivileges"):
        init.load_seccomp(seccomp)  # needs CAP_SYS_ADMIN without no_new_privs: before the caps go
        seccomp = None
    # (No masked paths here: they are mounts, and the mount namespace is the container's.)
    if "capabilities" in spec or "capabilities" in proc:  # exec --privileged: the spec's
        init.set_capabilities(spec.get("capabilities") or proc["capabilities"])
    if proc.get("noNewPrivileges"):
        init.prctl(init.PR_SET_NO_NEW_PRIVS, 1, "PR_SET_NO_NEW_PRIVS")
    if uid != 0:
        init.switch_user(uid, gid, groups)
    cwd = spec["cwd"] or "/"
    try:
        os.chdir(cwd)
    except OSError as e:
        raise init.StartError("other", f"chdir to cwd {cwd!r}: {e.strerror}") from e
    env = spec["env"]
    path = init.find_command(spec["args"][0], env)
    os.closerange(init.SYNC_FD + 1, init.resource.getrlimit(init.resource.RLIMIT_NOFILE)[0])
    envd = dict(e.split("=", 1) for e in env)
    init.reset_signals()
    init.load_seccomp(seccomp)  # as close to execve as possible
    try:
        os.execve(path, spec["args"], envd)
    except OSError as e:
        kind = "not-executable" if e.errno in (13, 8) else "not-found" if e.errno == 2 else "other"
        raise init.StartError(kind, f'exec: "{spec["args"][0]}": {e.strerror}') from e


def main():
    try:
        os.set_inheritable(init.SYNC_FD, False)
        init.libc.prctl(init.PR_SET_DUMPABLE, 0, 0, 0, 0)
        bundle, exec_id = sys.argv[1], sys.argv[2]
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            cfg = json.loads(f.read())
        with open(os.path.join(bundle, f"exec-{exec_id}.json"), "rb") as f:
            spec = json.loads(f.read())
        join(bundle, cfg)
        if os.fork() != 0:
            os._exit(0)  # handed over: the shim's monitor adopts the child
        run_in_container(cfg, spec)
    except init.StartError as e:
        os.write(init.SYNC_FD, f"{e.kind}\n{e}".encode())
    except BaseException as e:
        os.write(init.SYNC_FD, f"other\nexec: {type(e).__name__}: {e}".encode())
    os._exit(1)


if __name__ == "__main__":
    ctypes.set_errno(0)
    main()
