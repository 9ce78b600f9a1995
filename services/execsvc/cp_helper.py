"""``skiff cp``'s worker: stat, tar out of, or tar into a container's filesystem.

Run by execsvc as ``python3 -I -S cp_helper.py <stat|out|in> <request JSON>``;
stdout carries the answer (stat: one JSON line; out: a JSON stat line, then the
tar), stdin the tar for ``in``; a failure is one JSON line on stderr
(``{"kind", "message"}``) and exit status 1. The host's Python, stdlib only:
nothing of the container is executed or loaded, no user names are looked up.

Where the files are:

* a running container: its PID 1's root, ``/proc/<pid>/root``, opened once and
  checked against the recorded start time (a reused pid is refused). That fd
  belongs to the container's mount namespace, so its volumes and binds are seen
  exactly as the container sees them, without joining anything;
* otherwise: a private mount namespace of this process (``unshare``), in which
  the root filesystem and the binds and volumes are mounted as the init would
  (``init.mount_user_mounts``, no copy-up), on an empty directory execsvc made.
  The mounts vanish with this process, whatever happens; PR_SET_PDEATHSIG ties
  its life to execsvc's.

Either way every path is then resolved inside that root (``safetar``:
openat2 with RESOLVE_IN_ROOT), so no link can lead out of it.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# Appended, never first: nothing here may shadow a standard module.
sys.path.append(HERE)
sys.path.append(os.path.join(os.path.dirname(HERE), "common"))

import init  # noqa: E402  (the container init's mount helpers, stdlib only)
import safetar  # noqa: E402

CLONE_NEWNS = 0x00020000
PR_SET_PDEATHSIG = 1


def _starttime(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return int(data[data.rindex(b")") + 2:].split()[19])


def open_root(req):
    """An O_PATH fd of the container's root directory."""
    if req.get("pid"):
        pid = int(req["pid"])
        try:
            fd = os.open(f"/proc/{pid}/root", safetar.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            alive = _starttime(pid) == int(req["starttime"])
        except OSError:
            alive = False
        if not alive:
            raise safetar.CopyError("other", "the container stopped while copying; try again")
        return fd
    mnt = req["mountpoint"]
    init.check(init.libc.unshare(CLONE_NEWNS), "unshare")
    init.mount("", "/", None, init.MS_REC | init.MS_PRIVATE)
    init.mount_rootfs({"skiff": {"rootfsMount": req["rootfs"]}}, mnt)
    if req.get("readonly"):
        init.mount("", mnt, None, init.MS_BIND | init.MS_REMOUNT | init.MS_RDONLY)
    mounts = [m for m in req.get("mounts", []) if m["type"] != "tmpfs" and os.path.exists(m["source"])]
    for m in mounts:
        m["copyUp"] = False
    init.mount_user_mounts(mnt, mounts)
    return os.open(mnt, safetar.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def main():
    mode, req = sys.argv[1], json.loads(sys.argv[2])
    init.libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)
    init.libc.prctl(init.PR_SET_DUMPABLE, 0, 0, 0, 0)
    out = sys.stdout.buffer
    try:
        root = open_root(req)
        if mode == "stat":
            out.write(json.dumps(safetar.stat_path(root, req["path"])).encode() + b"\n")
        elif mode == "out":
            out.write(json.dumps(safetar.stat_path(root, req["path"])).encode() + b"\n")
            safetar.write_tar(root, req["path"], out)
        elif mode == "in":
            owner = None if req.get("copy_uid_gid") else (0, 0)
            safetar.extract_tar(root, req["path"], sys.stdin.buffer, owner=owner,
                                no_overwrite_dir_non_dir=bool(req.get("no_overwrite_dir_non_dir")))
        else:
            raise safetar.CopyError("invalid", f"unknown mode {mode}")
        out.flush()
    except safetar.CopyError as e:
        sys.stderr.write(json.dumps({"kind": e.kind, "message": str(e)}) + "\n")
        os._exit(1)
    except init.StartError as e:
        sys.stderr.write(json.dumps({"kind": "other", "message": str(e)}) + "\n")
        os._exit(1)
    except OSError as e:
        sys.stderr.write(json.dumps({"kind": safetar._kind(e), "message": f"{e.strerror}: {e.filename}"}) + "\n")
        os._exit(1)
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
