/*
 * cinit: the container's set-up in C for the common case, linked into skiff-shim.
 *
 * The cloned child calls cinit_run(bundle) before it would exec the Python init. With no
 * <bundle>/init.conf it returns at once and init.py runs as before; execsvc writes init.conf
 * (services/execsvc/cinit.py) only for containers that use none of the rare features the C
 * path leaves to init.py (terminal, --userns-remap, -v/--mount/volumes, --device,
 * --privileged, namespaces joined by path, a mount taken from another mount namespace).
 *
 * The steps and their order are init.py's run(), and so are the error messages: a failure
 * is written to the sync pipe (fd 3) as "<kind>\n<message>" and the process exits; a
 * successful execve closes fd 3 (close-on-exec), which the monitor reads as "started".
 *
 * init.conf: one key=value per line; in a value, fields are split by TAB and each field
 * has "\\", "\n" and "\t" escaped. Keys (repeated ones build lists, in order):
 *   cgroup_procs=<file>        cgroupns=1        propagation=<mount flags of />
 *   rootfs=<path>  rootfs_mount=<type>\t<source>\t<data>
 *   mount=<dest>\t<type or empty for a bind>\t<source>\t<flags>\t<data>
 *   masked=<path>  readonly=<path>  sysctl=<key>\t<value>  hostname=<name>
 *   rlimit=<resource>\t<soft>\t<hard>\t<name>
 *   caps=<bounding>\t<effective>\t<permitted>\t<inheritable>  ambient=<cap>\t<name>
 *   no_new_privs=1  seccomp=<hex of struct sock_filter[]>
 *   uid=<n>  gid=<n>  username=<name[:group]>  additional_gid=<n>
 *   cwd=<path>  readonly_root=1  arg=<argv[i]>  env=<KEY=value>  init=<path of skiff-init>
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <unistd.h>

#include "cinit.h"

#define CI_SYNC_FD 3
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

struct ci_mount {
    char *dest, *type, *source, *data;
    unsigned long flags;
};

struct ci_rlimit {
    int resource;
    unsigned long long soft, hard;
    char *name;
};

struct ci_list {
    char **v;
    int n;
};

static struct {
    struct ci_list procs, masked, readonly, sysctl_k, sysctl_v, argv, env, ambient_names;
    int cgroupns;
    unsigned long propagation;
    char *rootfs, *rootfs_type, *rootfs_source, *rootfs_data;
    struct ci_mount *mounts;
    int nmounts;
    char *hostname;
    struct ci_rlimit *rlimits;
    int nrlimits;
    int have_caps;
    unsigned long long bounding, effective, permitted, inheritable;
    int *ambient;
    int nambient;
    int no_new_privs;
    unsigned char *seccomp;
    size_t seccomp_len;
    unsigned uid, gid;
    int have_gid;
    char *username;
    unsigned *gids;
    int ngids;
    char *cwd;
    int readonly_root;
    char *init;
} C;

/* ---- errors ----------------------------------------------------------------- */

static void __attribute__((noreturn, format(printf, 2, 3))) ci_fail_kind(const char *kind, const char *fmt, ...)
{
    char buf[8192];
    int n = snprintf(buf, sizeof buf, "%s\n", kind);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
    va_end(ap);
    size_t len = strlen(buf), off = 0;
    while (off < len) {
        ssize_t w = write(CI_SYNC_FD, buf + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    _exit(1);
}

#define ci_fail(...) ci_fail_kind("other", __VA_ARGS__)

/* Python's text for an OSError from os.makedirs (init.py lets those through as "init: ..."). */
static void __attribute__((noreturn)) ci_fail_oserror(int err, const char *path)
{
    const char *cls = err == EEXIST    ? "FileExistsError"
                      : err == ENOTDIR ? "NotADirectoryError"
                      : err == ENOENT  ? "FileNotFoundError"
                      : err == EACCES || err == EPERM ? "PermissionError"
                                                       : "OSError";
    ci_fail("init: %s: [Errno %d] %s: '%s'", cls, err, strerror(err), path);
}

static void *ci_alloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (!p)
        ci_fail("init: MemoryError");
    return p;
}

static void ci_push(struct ci_list *l, char *s)
{
    l->v = ci_alloc(l->v, sizeof(char *) * (size_t)(l->n + 2));
    l->v[l->n++] = s;
    l->v[l->n] = NULL;
}

/* ---- init.conf ---------------------------------------------------------------- */

static void ci_unescape(char *s)
{
    char *o = s;
    for (; *s; s++) {
        if (*s == '\\' && s[1]) {
            s++;
            *o++ = *s == 'n' ? '\n' : *s == 't' ? '\t' : *s;
        } else {
            *o++ = *s;
        }
    }
    *o = 0;
}

/* Splits on raw TABs (escaped ones are "\t"), then unescapes each field; returns the count. */
static int ci_fields(char *s, char **f, int max)
{
    int n = 0;
    while (n < max) {
        f[n++] = s;
        char *t = strchr(s, '\t');
        if (!t)
            break;
        *t = 0;
        s = t + 1;
    }
    for (int i = 0; i < n; i++)
        ci_unescape(f[i]);
    for (int i = n; i < max; i++)
        f[i] = "";
    return n;
}

static unsigned long long ci_num(const char *s)
{
    return strtoull(s, NULL, 0);
}

static int ci_hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Returns 0 when there is no init.conf (the Python init runs), 1 when it was read. */
static int ci_read_conf(const char *bundle)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/init.conf", bundle);
    FILE *f = fopen(path, "re");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        ci_fail("open %s: %s", path, strerror(errno));
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) >= 0) {
        if (len > 0 && line[len - 1] == '\n')
            line[len - 1] = 0;
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq = 0;
        const char *k = line;
        char *v = strdup(eq + 1);
        char *fl[5];
        if (!v)
            ci_fail("init: MemoryError");
        if (!strcmp(k, "cgroup_procs") || !strcmp(k, "masked") || !strcmp(k, "readonly") || !strcmp(k, "arg") ||
            !strcmp(k, "env")) {
            ci_unescape(v);
            ci_push(!strcmp(k, "cgroup_procs") ? &C.procs
                    : !strcmp(k, "masked")     ? &C.masked
                    : !strcmp(k, "readonly")   ? &C.readonly
                    : !strcmp(k, "arg")        ? &C.argv
                                               : &C.env,
                    v);
        } else if (!strcmp(k, "cgroupns")) {
            C.cgroupns = 1;
        } else if (!strcmp(k, "propagation")) {
            C.propagation = (unsigned long)ci_num(v);
        } else if (!strcmp(k, "rootfs")) {
            ci_unescape(v);
            C.rootfs = v;
        } else if (!strcmp(k, "rootfs_mount")) {
            ci_fields(v, fl, 3);
            C.rootfs_type = fl[0];
            C.rootfs_source = fl[1];
            C.rootfs_data = fl[2];
        } else if (!strcmp(k, "mount")) {
            ci_fields(v, fl, 5);
            C.mounts = ci_alloc(C.mounts, sizeof *C.mounts * (size_t)(C.nmounts + 1));
            C.mounts[C.nmounts++] = (struct ci_mount){fl[0], fl[1], fl[2], fl[4], (unsigned long)ci_num(fl[3])};
        } else if (!strcmp(k, "sysctl")) {
            ci_fields(v, fl, 2);
            ci_push(&C.sysctl_k, fl[0]);
            ci_push(&C.sysctl_v, fl[1]);
        } else if (!strcmp(k, "hostname")) {
            ci_unescape(v);
            C.hostname = v;
        } else if (!strcmp(k, "rlimit")) {
            ci_fields(v, fl, 4);
            C.rlimits = ci_alloc(C.rlimits, sizeof *C.rlimits * (size_t)(C.nrlimits + 1));
            C.rlimits[C.nrlimits++] = (struct ci_rlimit){(int)ci_num(fl[0]), ci_num(fl[1]), ci_num(fl[2]), fl[3]};
        } else if (!strcmp(k, "caps")) {
            ci_fields(v, fl, 4);
            C.have_caps = 1;
            C.bounding = ci_num(fl[0]);
            C.effective = ci_num(fl[1]);
            C.permitted = ci_num(fl[2]);
            C.inheritable = ci_num(fl[3]);
        } else if (!strcmp(k, "ambient")) {
            ci_fields(v, fl, 2);
            C.ambient = ci_alloc(C.ambient, sizeof(int) * (size_t)(C.nambient + 1));
            C.ambient[C.nambient++] = (int)ci_num(fl[0]);
            ci_push(&C.ambient_names, fl[1]);
        } else if (!strcmp(k, "no_new_privs")) {
            C.no_new_privs = 1;
        } else if (!strcmp(k, "seccomp")) {
            size_t n = strlen(v) / 2;
            C.seccomp = ci_alloc(NULL, n + 1);
            for (size_t i = 0; i < n; i++) {
                int hi = ci_hexval(v[2 * i]), lo = ci_hexval(v[2 * i + 1]);
                if (hi < 0 || lo < 0)
                    ci_fail("init.conf: bad seccomp program");
                C.seccomp[i] = (unsigned char)(hi << 4 | lo);
            }
            C.seccomp_len = n;
        } else if (!strcmp(k, "uid")) {
            C.uid = (unsigned)ci_num(v);
        } else if (!strcmp(k, "gid")) {
            C.gid = (unsigned)ci_num(v);
            C.have_gid = 1;
        } else if (!strcmp(k, "username")) {
            ci_unescape(v);
            C.username = v;
        } else if (!strcmp(k, "additional_gid")) {
            C.gids = ci_alloc(C.gids, sizeof(unsigned) * (size_t)(C.ngids + 1));
            C.gids[C.ngids++] = (unsigned)ci_num(v);
        } else if (!strcmp(k, "cwd")) {
            ci_unescape(v);
            C.cwd = v;
        } else if (!strcmp(k, "readonly_root")) {
            C.readonly_root = 1;
        } else if (!strcmp(k, "init")) {
            ci_unescape(v);
            C.init = v;
        }
    }
    free(line);
    fclose(f);
    if (!C.rootfs || !C.rootfs_type || C.argv.n == 0)
        ci_fail("%s: incomplete (rootfs, rootfs_mount and arg are needed)", path);
    return 1;
}

/* ---- mounts ------------------------------------------------------------------- */

static const char *ci_nz(const char *s)
{
    return s && *s ? s : NULL;
}

/* init.py's mount(): "mount <fstype or 'flags'> on <target>: <error>". */
static void ci_mount(const char *source, const char *target, const char *fstype, unsigned long flags,
                     const char *data, const char *shown)
{
    if (mount(ci_nz(source), target, ci_nz(fstype), flags, ci_nz(data)) != 0)
        ci_fail("mount %s on %s: %s", ci_nz(fstype) ? fstype : "flags", shown ? shown : target, strerror(errno));
}

/* openat2 with every path resolved inside rootfd: "..", absolute paths and symlinks stop at it. */
static int ci_open_in_root(int rootfd, const char *path, int flags)
{
    struct open_how how = {
        .flags = (unsigned long long)(flags | O_CLOEXEC),
        .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    return (int)syscall(SYS_openat2, rootfd, path[0] ? path : "/", &how, sizeof how);
}

/*
 * The destination `dest`, resolved inside the container's root (rootfd), made where missing
 * (directories; the last one a file when !want_dir), opened O_PATH. A missing component
 * that is a dangling symlink is followed inside the root, as init.py's secure_join does.
 * `resolved` gets the path (in the root) it was opened by.
 */
static int ci_target(int rootfd, const char *dest, int want_dir, const char *shown, char *resolved)
{
    char path[PATH_MAX], prefix[PATH_MAX], next[PATH_MAX];
    int hops = 0;
    snprintf(path, sizeof path, "%s", dest);
restart:
    prefix[0] = 0;
    for (char *p = path; *p;) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        char *end = strchrnul(p, '/');
        size_t clen = (size_t)(end - p);
        if (clen == 1 && p[0] == '.') {
            p = end;
            continue;
        }
        char comp[NAME_MAX + 1];
        if (clen > NAME_MAX)
            ci_fail("mount destination %s: %s", shown, strerror(ENAMETOOLONG));
        memcpy(comp, p, clen);
        comp[clen] = 0;
        char cand[PATH_MAX];
        if ((size_t)snprintf(cand, sizeof cand, "%s/%s", prefix, comp) >= sizeof cand)
            ci_fail("mount destination %s: %s", shown, strerror(ENAMETOOLONG));
        p = end;
        while (*p == '/')
            p++;
        int last = *p == 0;
        int fd = ci_open_in_root(rootfd, cand, O_PATH);
        if (fd >= 0) {
            close(fd);
            memcpy(prefix, cand, sizeof prefix);
            continue;
        }
        if (errno != ENOENT)
            ci_fail("mount destination %s: %s", shown, strerror(errno));
        fd = ci_open_in_root(rootfd, cand, O_PATH | O_NOFOLLOW);
        if (fd >= 0) { /* a dangling symlink: go on from its target, inside the root */
            char target[PATH_MAX];
            ssize_t n = readlinkat(fd, "", target, sizeof target - 1);
            close(fd);
            if (n < 0)
                ci_fail("mount destination %s: %s", shown, strerror(errno));
            target[n] = 0;
            if (++hops > 40)
                ci_fail("too many symlinks in %s", dest);
            if ((size_t)snprintf(next, sizeof next, "%s/%s%s%s", target[0] == '/' ? "" : prefix, target,
                                 *p ? "/" : "", p) >= sizeof next)
                ci_fail("mount destination %s: %s", shown, strerror(ENAMETOOLONG));
            memcpy(path, next, sizeof path);
            goto restart;
        }
        if (errno != ENOENT)
            ci_fail("mount destination %s: %s", shown, strerror(errno));
        int pfd = ci_open_in_root(rootfd, prefix, O_PATH | O_DIRECTORY);
        if (pfd < 0)
            ci_fail("mount destination %s: %s", shown, strerror(errno));
        if (!last || want_dir) {
            if (mkdirat(pfd, comp, 0777) != 0 && errno != EEXIST)
                ci_fail("mount destination %s: %s", shown, strerror(errno));
        } else {
            int nf = openat(pfd, comp, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0666);
            if (nf < 0)
                ci_fail("mount destination %s: %s", shown, strerror(errno));
            close(nf);
        }
        close(pfd);
        memcpy(prefix, cand, sizeof prefix);
    }
    int fd = ci_open_in_root(rootfd, path, O_PATH);
    if (fd < 0)
        ci_fail("mount destination %s: %s", shown, strerror(errno));
    snprintf(resolved, PATH_MAX, "%s", path);
    return fd;
}

static void ci_fdpath(char *dst, int fd)
{
    snprintf(dst, 64, "/proc/self/fd/%d", fd);
}

static void ci_mount_one(int rootfd, const struct ci_mount *m)
{
    char shown[PATH_MAX * 2], resolved[PATH_MAX], at[64];
    snprintf(shown, sizeof shown, "%s%s", C.rootfs, m->dest);
    int bind = !m->type[0] || (m->flags & MS_BIND);
    if (bind) {
        struct stat st;
        int is_dir = stat(m->source, &st) == 0 && S_ISDIR(st.st_mode);
        int fd = ci_target(rootfd, m->dest, is_dir, shown, resolved);
        ci_fdpath(at, fd);
        ci_mount(m->source, at, NULL, MS_BIND | (m->flags & MS_REC), NULL, shown);
        close(fd);
        if (m->flags & ~(unsigned long)(MS_BIND | MS_REC)) {
            /* A bind ignores most flags: a remount applies them, on the new mount (a fresh lookup). */
            fd = ci_open_in_root(rootfd, resolved, O_PATH);
            if (fd < 0)
                ci_fail("mount destination %s: %s", shown, strerror(errno));
            ci_fdpath(at, fd);
            ci_mount(NULL, at, NULL, (m->flags & ~(unsigned long)MS_REC) | MS_REMOUNT | MS_BIND, NULL, shown);
            close(fd);
        }
        return;
    }
    int fd = ci_target(rootfd, m->dest, 1, shown, resolved);
    ci_fdpath(at, fd);
    ci_mount(m->source, at, m->type, m->flags, m->data, shown);
    close(fd);
}

static void ci_populate_dev(int rootfd)
{
    static const struct {
        const char *name;
        unsigned major, minor;
    } nodes[] = {{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}};
    static const char *links[][2] = {{"fd", "/proc/self/fd"},         {"stdin", "/proc/self/fd/0"},
                                     {"stdout", "/proc/self/fd/1"},   {"stderr", "/proc/self/fd/2"},
                                     {"core", "/proc/kcore"},         {"ptmx", "pts/ptmx"}};
    int dev = ci_open_in_root(rootfd, "/dev", O_PATH | O_DIRECTORY);
    if (dev < 0)
        ci_fail("open %s/dev: %s", C.rootfs, strerror(errno));
    for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++) {
        if (mknodat(dev, nodes[i].name, 0666 | S_IFCHR, makedev(nodes[i].major, nodes[i].minor)) != 0)
            ci_fail("mknod %s/dev/%s: %s", C.rootfs, nodes[i].name, strerror(errno));
        if (fchmodat(dev, nodes[i].name, 0666, 0) != 0)
            ci_fail("chmod %s/dev/%s: %s", C.rootfs, nodes[i].name, strerror(errno));
    }
    for (size_t i = 0; i < sizeof links / sizeof links[0]; i++) {
        if (symlinkat(links[i][1], dev, links[i][0]) != 0 && errno != EEXIST)
            ci_fail("symlink %s/dev/%s: %s", C.rootfs, links[i][0], strerror(errno));
    }
    close(dev);
}

static void ci_enter_rootfs(void)
{
    if (chdir(C.rootfs) != 0)
        ci_fail("chdir %s: %s", C.rootfs, strerror(errno));
    if (syscall(SYS_pivot_root, ".", ".") != 0)
        ci_fail("pivot_root: %s", strerror(errno));
    ci_mount(NULL, ".", NULL, MS_SLAVE | MS_REC, NULL, NULL);
    if (umount2(".", MNT_DETACH) != 0)
        ci_fail("umount2 .: %s", strerror(errno));
    if (chdir("/") != 0)
        ci_fail("chdir /: %s", strerror(errno));
}

static void ci_mask_paths(void)
{
    struct stat st;
    for (int i = 0; i < C.masked.n; i++) {
        const char *p = C.masked.v[i];
        if (lstat(p, &st) != 0)
            continue; /* not on this kernel */
        if (S_ISDIR(st.st_mode))
            ci_mount("tmpfs", p, "tmpfs", MS_RDONLY, NULL, NULL);
        else
            ci_mount("/dev/null", p, NULL, MS_BIND, NULL, NULL);
    }
    for (int i = 0; i < C.readonly.n; i++) {
        const char *p = C.readonly.v[i];
        if (lstat(p, &st) != 0)
            continue;
        ci_mount(p, p, NULL, MS_BIND | MS_REC, NULL, NULL);
        ci_mount(NULL, p, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, NULL);
    }
}

/* ---- the process -------------------------------------------------------------- */

static void ci_write_file(const char *path, const char *value, const char *what)
{
    int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (fd < 0)
        ci_fail("%s: %s", what, strerror(errno));
    size_t len = strlen(value);
    if (write(fd, value, len) != (ssize_t)len) {
        int err = errno;
        close(fd);
        ci_fail("%s: %s", what, strerror(err));
    }
    if (close(fd) != 0)
        ci_fail("%s: %s", what, strerror(errno));
}

/* The cgroup.procs files, opened before pivot_root (written later, see cinit_run). */
static int *ci_cgroup_fds;

static void ci_open_cgroups(void)
{
    ci_cgroup_fds = ci_alloc(NULL, sizeof(int) * (size_t)(C.procs.n + 1));
    for (int i = 0; i < C.procs.n; i++)
        if ((ci_cgroup_fds[i] = open(C.procs.v[i], O_WRONLY | O_CLOEXEC)) < 0)
            ci_fail("join cgroup %s: %s", C.procs.v[i], strerror(errno));
}

static void ci_join_cgroups(void)
{
    for (int i = 0; i < C.procs.n; i++) {
        if (write(ci_cgroup_fds[i], "0", 1) != 1)
            ci_fail("join cgroup %s: %s", C.procs.v[i], strerror(errno));
        close(ci_cgroup_fds[i]);
    }
}

static void ci_set_sysctls(void)
{
    char path[PATH_MAX], what[PATH_MAX];
    for (int i = 0; i < C.sysctl_k.n; i++) {
        snprintf(path, sizeof path, "/proc/sys/%s", C.sysctl_k.v[i]);
        for (char *c = path + 10; *c; c++)
            if (*c == '.')
                *c = '/';
        snprintf(what, sizeof what, "write sysctl key %s", C.sysctl_k.v[i]);
        ci_write_file(path, C.sysctl_v.v[i], what);
    }
}

static void ci_set_rlimits(void)
{
    for (int i = 0; i < C.nrlimits; i++) {
        struct ci_rlimit *r = &C.rlimits[i];
        struct rlimit cur, want;
        if (getrlimit(r->resource, &cur) != 0)
            ci_fail("getrlimit %s: %s", r->name, strerror(errno));
        /* never above the hard limit the container starts with */
        want.rlim_max = cur.rlim_max == RLIM_INFINITY || r->hard < cur.rlim_max ? r->hard : cur.rlim_max;
        want.rlim_cur = r->soft < want.rlim_max ? r->soft : want.rlim_max;
        if (setrlimit(r->resource, &want) != 0)
            ci_fail("setrlimit %s: %s", r->name, strerror(errno));
    }
}

/* /etc/passwd or /etc/group of the container as lines of ':'-separated fields. */
struct ci_db {
    char ***rows;
    int *nf;
    int n;
};

static void ci_read_db(const char *path, struct ci_db *db)
{
    memset(db, 0, sizeof *db);
    FILE *f = fopen(path, "re");
    if (!f)
        return;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = 0;
        char *copy = strdup(line);
        if (!copy)
            ci_fail("init: MemoryError");
        int nf = 1;
        for (char *c = copy; *c; c++)
            nf += *c == ':';
        char **fields = ci_alloc(NULL, sizeof(char *) * (size_t)nf);
        fields[0] = copy;
        int k = 1;
        for (char *c = copy; *c; c++)
            if (*c == ':') {
                *c = 0;
                fields[k++] = c + 1;
            }
        db->rows = ci_alloc(db->rows, sizeof(char **) * (size_t)(db->n + 1));
        db->nf = ci_alloc(db->nf, sizeof(int) * (size_t)(db->n + 1));
        db->rows[db->n] = fields;
        db->nf[db->n++] = nf;
    }
    free(line);
    fclose(f);
}

static int ci_isdigits(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return 0;
    return 1;
}

static int ci_cmp_gid(const void *a, const void *b)
{
    unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
    return x < y ? -1 : x > y;
}

/* init.py's resolve_user(): (uid, gid, supplementary groups) from the container's /etc. */
static void ci_resolve_user(unsigned *uid, unsigned *gid, gid_t **groups, int *ngroups)
{
    struct ci_db passwd, group;
    ci_read_db("/etc/passwd", &passwd);
    ci_read_db("/etc/group", &group);
    *uid = C.uid;
    int have_gid = C.have_gid;
    *gid = C.gid;
    const char *name = NULL;
    if (C.username) {
        char *uname = strdup(C.username);
        if (!uname)
            ci_fail("init: MemoryError");
        char *colon = strchr(uname, ':');
        const char *gname = "";
        if (colon) {
            *colon = 0;
            gname = colon + 1;
        }
        have_gid = 0;
        if (ci_isdigits(uname)) {
            *uid = (unsigned)strtoul(uname, NULL, 10);
        } else {
            int found = 0;
            for (int i = 0; i < passwd.n && !found; i++) {
                if (passwd.nf[i] > 3 && !strcmp(passwd.rows[i][0], uname)) {
                    *uid = (unsigned)strtoul(passwd.rows[i][2], NULL, 10);
                    *gid = (unsigned)strtoul(passwd.rows[i][3], NULL, 10);
                    have_gid = 1;
                    name = uname;
                    found = 1;
                }
            }
            if (!found)
                ci_fail("unable to find user %s: no matching entries in passwd file", uname);
        }
        if (*gname) {
            if (ci_isdigits(gname)) {
                *gid = (unsigned)strtoul(gname, NULL, 10);
            } else {
                int found = 0;
                for (int i = 0; i < group.n && !found; i++) {
                    if (group.nf[i] > 2 && !strcmp(group.rows[i][0], gname)) {
                        *gid = (unsigned)strtoul(group.rows[i][2], NULL, 10);
                        found = 1;
                    }
                }
                if (!found)
                    ci_fail("unable to find group %s: no matching entries in group file", gname);
            }
            have_gid = 1;
        }
    }
    if (!name) {
        char want[32];
        snprintf(want, sizeof want, "%u", *uid);
        for (int i = 0; i < passwd.n; i++) {
            if (passwd.nf[i] > 3 && !strcmp(passwd.rows[i][2], want)) {
                name = passwd.rows[i][0];
                if (!have_gid) {
                    *gid = (unsigned)strtoul(passwd.rows[i][3], NULL, 10);
                    have_gid = 1;
                }
                break;
            }
        }
    }
    if (!have_gid)
        *gid = 0;
    unsigned *extra = ci_alloc(NULL, sizeof(unsigned) * (size_t)(C.ngids + group.n + 1));
    int n = 0;
    for (int i = 0; i < C.ngids; i++)
        extra[n++] = C.gids[i];
    if (name && *name) {
        for (int i = 0; i < group.n; i++) {
            if (group.nf[i] <= 3 || !ci_isdigits(group.rows[i][2]))
                continue;
            char *members = strdup(group.rows[i][3]), *save = NULL;
            if (!members)
                ci_fail("init: MemoryError");
            /* Python's split(","): empty members count too, and never equal a name */
            for (char *m = strtok_r(members, ",", &save); m; m = strtok_r(NULL, ",", &save)) {
                if (!strcmp(m, name)) {
                    extra[n++] = (unsigned)strtoul(group.rows[i][2], NULL, 10);
                    break;
                }
            }
            free(members);
        }
    }
    qsort(extra, (size_t)n, sizeof(unsigned), ci_cmp_gid);
    gid_t *out = ci_alloc(NULL, sizeof(gid_t) * (size_t)(n + 1));
    int k = 0;
    for (int i = 0; i < n; i++)
        if (extra[i] != *gid && (k == 0 || out[k - 1] != extra[i]))
            out[k++] = extra[i];
    *groups = out;
    *ngroups = k;
}

static void ci_switch_user(unsigned uid, unsigned gid, gid_t *groups, int ngroups)
{
    /* Groups and gid before uid: after setuid they could no longer change. */
    if (setgroups((size_t)ngroups, groups) != 0 || setgid(gid) != 0 || setuid(uid) != 0)
        ci_fail("switch to user %u:%u: %s", uid, gid, strerror(errno));
}

/* os.makedirs(cwd, exist_ok=True), with Python's error text. */
static void ci_makedirs(const char *dir)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s", dir);
    size_t len = strlen(p);
    while (len > 1 && p[len - 1] == '/')
        p[--len] = 0;
    struct stat st;
    if (stat(p, &st) == 0) {
        if (!S_ISDIR(st.st_mode))
            ci_fail_oserror(EEXIST, p);
        return;
    }
    for (char *c = p + 1;; c++) {
        if (*c == '/' || *c == 0) {
            char saved = *c;
            *c = 0;
            if (mkdir(p, 0777) != 0 && errno != EEXIST)
                ci_fail_oserror(errno, p);
            *c = saved;
            if (!saved)
                break;
        }
    }
    if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode))
        ci_fail_oserror(EEXIST, p);
}

static void ci_prctl(int option, unsigned long arg, const char *what)
{
    if (prctl(option, arg, 0L, 0L, 0L) != 0)
        ci_fail("prctl %s: %s", what, strerror(errno));
}

static void ci_load_seccomp(void)
{
    struct sock_fprog prog = {
        .len = (unsigned short)(C.seccomp_len / sizeof(struct sock_filter)),
        .filter = (struct sock_filter *)C.seccomp,
    };
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0L, 0L) != 0)
        ci_fail("prctl PR_SET_SECCOMP: %s", strerror(errno));
}

static void ci_set_capabilities(void)
{
    char buf[32] = "40";
    int fd = open("/proc/sys/kernel/cap_last_cap", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, buf, sizeof buf - 1);
        buf[n > 0 ? n : 0] = 0;
        close(fd);
    }
    int last = atoi(buf);
    char what[64];
    for (int cap = 0; cap <= last; cap++) {
        if (!(C.bounding & (1ULL << cap))) {
            snprintf(what, sizeof what, "PR_CAPBSET_DROP %d", cap);
            ci_prctl(PR_CAPBSET_DROP, (unsigned long)cap, what);
        }
    }
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2] = {
        {(unsigned)(C.effective & 0xffffffff), (unsigned)(C.permitted & 0xffffffff),
         (unsigned)(C.inheritable & 0xffffffff)},
        {(unsigned)(C.effective >> 32), (unsigned)(C.permitted >> 32), (unsigned)(C.inheritable >> 32)},
    };
    if (syscall(SYS_capset, &hdr, data) != 0)
        ci_fail("capset: %s", strerror(errno));
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0L, 0L, 0L) != 0)
        ci_fail("prctl PR_CAP_AMBIENT_CLEAR_ALL: %s", strerror(errno));
    for (int i = 0; i < C.nambient; i++) {
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, (unsigned long)C.ambient[i], 0L, 0L) != 0)
            ci_fail("prctl PR_CAP_AMBIENT_RAISE %s: %s", C.ambient_names.v[i], strerror(errno));
    }
}

static int ci_is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* init.py's find_command(): the path to exec, with Docker's wording and exit-code kind. */
static char *ci_find_command(const char *name)
{
    struct stat st;
    if (strchr(name, '/')) {
        if (stat(name, &st) != 0)
            ci_fail_kind("not-found", "exec: \"%s\": stat %s: no such file or directory", name, name);
        if (S_ISDIR(st.st_mode) || access(name, X_OK) != 0)
            ci_fail_kind("not-executable", "exec: \"%s\": permission denied", name);
        return (char *)name;
    }
    const char *path = DEFAULT_PATH;
    for (int i = 0; i < C.env.n; i++) {
        if (!strncmp(C.env.v[i], "PATH=", 5)) {
            path = C.env.v[i] + 5;
            break;
        }
    }
    int denied = 0;
    static char cand[PATH_MAX];
    for (const char *d = path;;) {
        const char *end = strchrnul(d, ':');
        int dlen = (int)(end - d);
        if (dlen == 0)
            snprintf(cand, sizeof cand, "./%s", name);
        else
            snprintf(cand, sizeof cand, "%.*s%s%s", dlen, d, d[dlen - 1] == '/' ? "" : "/", name);
        if (ci_is_file(cand)) {
            if (access(cand, X_OK) == 0)
                return cand;
            denied = 1;
        }
        if (!*end)
            break;
        d = end + 1;
    }
    if (denied)
        ci_fail_kind("not-executable", "exec: \"%s\": permission denied", name);
    ci_fail_kind("not-found", "exec: \"%s\": executable file not found in $PATH", name);
}

/* Python's repr() of a str without quotes or backslashes inside: '...'; else "...". */
static void ci_fail_chdir(const char *cwd, int err)
{
    int sq = strchr(cwd, '\'') != NULL, dq = strchr(cwd, '"') != NULL;
    char q = sq && !dq ? '"' : '\'';
    ci_fail("chdir to cwd %c%s%c: %s", q, cwd, q, strerror(err));
}

static void ci_reset_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            sigaction(sig, &sa, NULL); /* 32 and 33 (libc's) are refused: as in init.py */
}

void cinit_run(const char *bundle)
{
    if (!ci_read_conf(bundle))
        return;
    fcntl(CI_SYNC_FD, F_SETFD, FD_CLOEXEC);
    /* Early: nothing in the container may ptrace us or read our memory while we set up. */
    prctl(PR_SET_DUMPABLE, 0L, 0L, 0L, 0L);
    /* The monitor moves this process into the container's cgroups right after the clone; on
     * cgroup v1 the first move waits for an RCU grace period (~8 ms here), so the set-up runs
     * meanwhile and the process joins them itself (a no-op by then, or it reports why it
     * cannot) before anything of the user's runs: init.py joins first, but it has an
     * interpreter's start-up to hide the wait behind. */
    ci_open_cgroups();
    mode_t old_umask = umask(0);
    /* Nothing mounted from here on may propagate back to the host. */
    ci_mount(NULL, "/", NULL, MS_REC | (C.propagation ? C.propagation : MS_PRIVATE), NULL, NULL);
    if (!strcmp(C.rootfs_type, "bind"))
        ci_mount(C.rootfs_source, C.rootfs, NULL, MS_BIND | MS_REC, NULL, NULL);
    else
        ci_mount(C.rootfs_source, C.rootfs, C.rootfs_type, 0, C.rootfs_data, NULL);
    int rootfd = open(C.rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0)
        ci_fail("open %s: %s", C.rootfs, strerror(errno));
    /* The root mount before anything inside it; /dev before /dev/pts. */
    for (int i = 0; i < C.nmounts; i++) {
        ci_mount_one(rootfd, &C.mounts[i]);
        if (!strcmp(C.mounts[i].dest, "/dev"))
            ci_populate_dev(rootfd);
    }
    close(rootfd);
    ci_enter_rootfs();
    /* The container's /proc/sys, before it is made read-only; net.* in the container's netns. */
    ci_set_sysctls();
    umask(old_umask);
    if (C.hostname && C.hostname[0] && sethostname(C.hostname, strlen(C.hostname)) != 0)
        ci_fail("sethostname: %s", strerror(errno));
    ci_set_rlimits();
    unsigned uid, gid;
    gid_t *groups;
    int ngroups;
    ci_resolve_user(&uid, &gid, &groups, &ngroups); /* the container's /etc: after pivot_root */
    const char *cwd = C.cwd && C.cwd[0] ? C.cwd : "/";
    ci_makedirs(cwd); /* as root, like Docker's WORKDIR */
    if (C.readonly_root) /* last of the mounts: binds on top keep their own flags */
        ci_mount(NULL, "/", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL, NULL);
    ci_join_cgroups(); /* still root with every capability */
    if (C.cgroupns && unshare(CLONE_NEWCGROUP) != 0) /* after the join: rooted at the container's cgroup */
        ci_fail("unshare(CLONE_NEWCGROUP): %s", strerror(errno));
    int seccomp_pending = C.seccomp_len > 0;
    if (uid == 0) /* root stays root: switch groups while CAP_SETGID is still there */
        ci_switch_user(uid, gid, groups, ngroups);
    /* Masked/read-only paths need CAP_SYS_ADMIN: before the capabilities go. */
    ci_mask_paths();
    if (seccomp_pending && !C.no_new_privs) { /* without no_new_privs, loading needs CAP_SYS_ADMIN */
        ci_load_seccomp();
        seccomp_pending = 0;
    }
    if (C.have_caps)
        ci_set_capabilities();
    if (C.no_new_privs)
        ci_prctl(PR_SET_NO_NEW_PRIVS, 1, "PR_SET_NO_NEW_PRIVS");
    if (uid != 0)
        ci_switch_user(uid, gid, groups, ngroups);
    if (chdir(cwd) != 0)
        ci_fail_chdir(cwd, errno);
    char *path = ci_find_command(C.argv.v[0]);
    char **argv = C.argv.v;
    if (C.init && C.init[0]) { /* --init: skiff-init runs the command as its child */
        argv = ci_alloc(NULL, sizeof(char *) * (size_t)(C.argv.n + 3));
        argv[0] = C.init;
        argv[1] = "--";
        memcpy(argv + 2, C.argv.v, sizeof(char *) * (size_t)(C.argv.n + 1));
        path = C.init;
    }
    /* Only stdio and the (close-on-exec) sync pipe may reach the user's command. */
    syscall(SYS_close_range, CI_SYNC_FD + 1, ~0U, 0);
    ci_reset_signals();
    /* Seccomp as close to execve as possible: nothing after it needs a denied syscall. */
    if (seccomp_pending)
        ci_load_seccomp();
    char *empty[] = {NULL};
    execve(path, argv, C.env.v ? C.env.v : empty);
    int err = errno;
    ci_fail_kind(err == EACCES || err == ENOEXEC ? "not-executable" : err == ENOENT ? "not-found" : "other",
                 "exec: \"%s\": %s", C.argv.v[0], strerror(err));
}
