/*
 * skiff-shim: starts one container and stays with it as a tiny monitor.
 *
 *   skiff-shim <bundle-dir> -- <init argv...>
 *
 * Containers must not depend on a Python process, and each one must cost
 * little memory, so the process that holds a container's stdio, writes its
 * log and records its exit status is this small C program, not Python.
 *
 * <bundle>/shim.conf holds one key=value per line (written by execsvc):
 *   clone_flags=<number>   CLONE_NEW* flags for the container process
 *   netns=<path>           optional: network namespace to join (setns)
 *   log=<path>             json-file log (Docker's format)
 *   oom=<path>             optional: cgroup file with an "oom_kill N" line
 *   log_max_size=<bytes>   optional: rotate the log when it reaches this size
 *   log_max_file=<n>       optional: files kept, <log> plus <log>.1 (newest) .. <log>.<n-1>
 *   log_compress=1         optional: gzip each rotated file (<log>.1.gz ...) in a child, as
 *                          Docker's json-file compress=true (container mode only)
 *   kill_on_exit=<path>    optional: a cgroup.procs file whose processes are killed when the
 *                          container's main process has exited (no pid namespace: --pid host)
 *
 * Handshake (three processes; "caller" is execsvc):
 *
 *   caller          shim (original)        monitor (setsid)          init (PID 1)
 *     | fork+exec ---> |                        |                         |
 *     |                | fork -----------------> | clone(CLONE_NEW*) -----> |
 *     |                |                        | write shim.pid,          | execve python init.py
 *     |                |                        |  init.pid, start.json    | ... set-up ...
 *     |                |                        | <--- sync pipe (fd 3) -- | execve(user cmd): CLOEXEC
 *     |                |                        |   EOF = started           |   closes fd 3 (EOF)
 *     |                |                        |   "kind\nmessage" = failed (init wrote it, exits)
 *     |                | <-- report pipe ------ |                          |
 *     | <-- exit code  |  '0' ok / 'n' not-found / 'x' not-executable / 'e' other + message
 *                       (exits: 0 / 127 / 126 / 1; message on stderr)
 *                                               | copy stdout/stderr -> log
 *                                               | waitpid -> exit.json (tmp+fsync+rename)
 *
 * On failure the monitor also writes <bundle>/start-error.json and removes
 * the pid files. The monitor is not a child of the caller after the original
 * process exits, so it survives the caller being killed.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "cinit.h"

#define LINE_CAP 16384 /* like Docker: longer lines are split into partial entries */
#define OUT_CAP (LINE_CAP * 6 + 512)
#define SYNC_FD 3

static const char *bundle;
static char standby_bundle[PATH_MAX]; /* standby mode: the bundle named by the go message */
static char conf_log[PATH_MAX], conf_netns[PATH_MAX], conf_oom[PATH_MAX];
static unsigned long conf_flags;
static long long conf_log_max_size; /* 0: never rotate */
static int conf_log_max_file = 1;
static int conf_log_compress;
static int compress_ok;    /* container mode: the exec monitor takes any child for its process */
static pid_t compress_pid; /* the gzip of <log>.1 still running; 0: none */
static char conf_kill_on_exit[PATH_MAX];
/* cgroup.procs files the monitor moves the container into while its init starts */
#define MAX_PROCS 16
static char conf_procs[MAX_PROCS][PATH_MAX];
static int n_procs;

struct stream {
    int fd;
    const char *name;
    size_t len;
    char buf[LINE_CAP];
};

static struct stream s_out = {.fd = -1, .name = "stdout"};
static struct stream s_err = {.fd = -1, .name = "stderr"};
static char out[OUT_CAP];
static size_t out_len;
static int log_fd = -1;
static long long log_size; /* bytes in the live log file (rotation) */

/* ---- small helpers ---------------------------------------------------- */

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("skiff-shim: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void bundle_path(char *dst, const char *name)
{
    snprintf(dst, PATH_MAX, "%s/%s", bundle, name);
}

/* tmp + fsync + rename, so readers never see a half-written file. */
/* Read until EOF or until buf (of size cap) is full; buf is NUL-terminated. */
static size_t read_full(int fd, char *buf, size_t cap)
{
    size_t got = 0;
    while (got < cap - 1) {
        ssize_t n = read(fd, buf + got, cap - 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    buf[got] = 0;
    return got;
}

static int write_file_atomic(const char *name, const char *content)
{
    char tmp[PATH_MAX], dst[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", bundle, name);
    bundle_path(dst, name);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    /* No fsync: the bundle is run-time state (tmpfs in production, gone at reboot);
     * rename alone keeps it whole across a crash of any process. */
    int rc = write_all(fd, content, strlen(content));
    close(fd);
    if (rc == 0)
        rc = rename(tmp, dst);
    return rc;
}

static void unlink_in_bundle(const char *name)
{
    char p[PATH_MAX];
    bundle_path(p, name);
    unlink(p);
}

static void now_rfc3339(char *dst, size_t n)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t k = strftime(dst, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(dst + k, n - k, ".%09ldZ", ts.tv_nsec);
}

/* Field 22 of /proc/<pid>/stat: lets execsvc tell a live pid from a reused one. */
static unsigned long long proc_starttime(pid_t pid)
{
    char p[64], buf[1024];
    snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    char *s = strrchr(buf, ')');
    if (!s)
        return 0;
    /* after ") " comes field 3 (state); starttime is field 22 */
    int field = 2;
    for (char *c = s + 1; *c; c++) {
        if (*c == ' ' && ++field == 22)
            return strtoull(c + 1, NULL, 10);
    }
    return 0;
}

/* Appends s to out as a JSON string body; invalid UTF-8 becomes U+FFFD. */
static void json_escape(const unsigned char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            if (c == '"' || c == '\\') {
                out[out_len++] = '\\';
                out[out_len++] = (char)c;
            } else if (c == '\n') {
                out[out_len++] = '\\';
                out[out_len++] = 'n';
            } else if (c == '\r') {
                out[out_len++] = '\\';
                out[out_len++] = 'r';
            } else if (c == '\t') {
                out[out_len++] = '\\';
                out[out_len++] = 't';
            } else if (c < 0x20) {
                memcpy(out + out_len, "\\u00", 4);
                out_len += 4;
                out[out_len++] = hex[c >> 4];
                out[out_len++] = hex[c & 15];
            } else {
                out[out_len++] = (char)c;
            }
            i++;
            continue;
        }
        size_t len = 0;
        unsigned char lo = 0x80, hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf)
            len = 2;
        else if (c >= 0xe0 && c <= 0xef) {
            len = 3;
            if (c == 0xe0)
                lo = 0xa0;
            if (c == 0xed)
                hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4;
            if (c == 0xf0)
                lo = 0x90;
            if (c == 0xf4)
                hi = 0x8f;
        }
        int ok = len > 0 && i + len <= n && s[i + 1] >= lo && s[i + 1] <= hi;
        for (size_t k = 2; ok && k < len; k++)
            ok = s[i + k] >= 0x80 && s[i + k] <= 0xbf;
        if (ok) {
            memcpy(out + out_len, s + i, len);
            out_len += len;
            i += len;
        } else {
            memcpy(out + out_len, "\\ufffd", 6);
            out_len += 6;
            i++;
        }
    }
}

static void flush_out(void)
{
    if (out_len > 0 && log_fd >= 0 && write_all(log_fd, out, out_len) == 0) /* nothing sensible on error */
        log_size += (long long)out_len;
    out_len = 0;
}

/* Reap the gzip child: at once (block) or only if it has finished. */
static void compress_wait(int block)
{
    if (compress_pid <= 0)
        return;
    pid_t r;
    while ((r = waitpid(compress_pid, NULL, block ? 0 : WNOHANG)) < 0 && errno == EINTR)
        ;
    if (r != 0)
        compress_pid = 0; /* reaped (or not ours any more) */
}

/* gzip <log>.1 in a child, in the background as Docker does. gzip removes <log>.1 only once
 * <log>.1.gz is whole, and readers prefer the plain file, so no one reads half an archive. */
static void compress_rotated(void)
{
    char src[PATH_MAX + 16];
    snprintf(src, sizeof src, "%s.1", conf_log);
    pid_t p = fork();
    if (p == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
        }
        syscall(SYS_close_range, 3, ~0U, 0); /* the container's pipes and sockets stay with the monitor */
        execl("/bin/gzip", "gzip", "-f", "-n", "-q", src, (char *)NULL);
        execl("/usr/bin/gzip", "gzip", "-f", "-n", "-q", src, (char *)NULL);
        _exit(127);
    }
    if (p > 0)
        compress_pid = p;
}

/* Move <from> to <to>; without a <from>, no stale <to> is left either. */
static void rename_slot(const char *from, const char *to)
{
    if (rename(from, to) < 0 && errno == ENOENT)
        unlink(to);
}

/* Docker's json-file rotation: <log>.<n-2> -> <log>.<n-1>, ..., <log> -> <log>.1, then a new
 * empty <log>; with one file the log is truncated. Records are whole before and after. With
 * compress, the .gz names move along and the new <log>.1 is gzipped in the background. */
static void rotate_log(void)
{
    char from[PATH_MAX + 16], to[PATH_MAX + 16];
    int gz = conf_log_compress && compress_ok && conf_log_max_file > 1;
    if (gz)
        compress_wait(1); /* the previous archive is whole before the names move */
    close(log_fd);
    for (int i = conf_log_max_file - 1; i >= 1; i--) {
        if (i == 1)
            snprintf(from, sizeof from, "%s", conf_log);
        else
            snprintf(from, sizeof from, "%s.%d", conf_log, i - 1);
        snprintf(to, sizeof to, "%s.%d", conf_log, i);
        if (i == 1)
            rename(from, to);
        else
            rename_slot(from, to);
        if (gz && i > 1) {
            snprintf(from, sizeof from, "%s.%d.gz", conf_log, i - 1);
            snprintf(to, sizeof to, "%s.%d.gz", conf_log, i);
            rename_slot(from, to);
        }
    }
    log_fd = open(conf_log, O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    log_size = 0;
    if (gz)
        compress_rotated();
}

/* Called before each record: rotates once the live file has reached its limit. */
static void rotate_log_if_full(void)
{
    if (conf_log_max_size <= 0 || log_fd < 0 || log_size + (long long)out_len < conf_log_max_size)
        return;
    flush_out();
    rotate_log();
}

/* One json-file entry: {"log":"...","stream":"stdout","time":"..."} */
static void emit(struct stream *st, const char *p, size_t n, const char *ts)
{
    rotate_log_if_full();
    if (out_len + n * 6 + 128 > OUT_CAP)
        flush_out();
    static const char head[] = "{\"log\":\"";
    memcpy(out + out_len, head, sizeof head - 1);
    out_len += sizeof head - 1;
    json_escape((const unsigned char *)p, n);
    out_len += (size_t)snprintf(out + out_len, OUT_CAP - out_len, "\",\"stream\":\"%s\",\"time\":\"%s\"}\n",
                                st->name, ts);
}

/* Reads what is available; emits complete lines. Returns 1 after data,
 * -1 when nothing is ready (EINTR/EAGAIN), 0 at EOF (stream flushed and closed). */
static int pump(struct stream *st)
{
    ssize_t n = read(st->fd, st->buf + st->len, LINE_CAP - st->len);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return -1;
    char ts[64];
    now_rfc3339(ts, sizeof ts);
    if (n <= 0) { /* EOF or error: flush the partial line */
        if (st->len > 0)
            emit(st, st->buf, st->len, ts);
        st->len = 0;
        flush_out();
        close(st->fd);
        st->fd = -1;
        return 0;
    }
    st->len += (size_t)n;
    size_t start = 0;
    for (size_t i = st->len - (size_t)n; i < st->len; i++) {
        if (st->buf[i] == '\n') {
            emit(st, st->buf + start, i + 1 - start, ts);
            start = i + 1;
        }
    }
    if (start == 0 && st->len == LINE_CAP) { /* buffer full, no newline */
        emit(st, st->buf, st->len, ts);
        start = st->len;
    }
    memmove(st->buf, st->buf + start, st->len - start);
    st->len -= start;
    flush_out();
    return 1;
}

/* ---- configuration ---------------------------------------------------- */

static void read_conf(void)
{
    char p[PATH_MAX], line[PATH_MAX + 32];
    bundle_path(p, "shim.conf");
    FILE *f = fopen(p, "re");
    if (!f)
        die("open %s: %s", p, strerror(errno));
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq = 0;
        const char *v = eq + 1;
        if (!strcmp(line, "clone_flags"))
            conf_flags = strtoul(v, NULL, 0);
        else if (!strcmp(line, "netns"))
            snprintf(conf_netns, sizeof conf_netns, "%s", v);
        else if (!strcmp(line, "log"))
            snprintf(conf_log, sizeof conf_log, "%s", v);
        else if (!strcmp(line, "oom"))
            snprintf(conf_oom, sizeof conf_oom, "%s", v);
        else if (!strcmp(line, "log_max_size"))
            conf_log_max_size = strtoll(v, NULL, 10);
        else if (!strcmp(line, "kill_on_exit"))
            snprintf(conf_kill_on_exit, sizeof conf_kill_on_exit, "%s", v);
        else if (!strcmp(line, "log_max_file"))
            conf_log_max_file = atoi(v) > 0 ? atoi(v) : 1;
        else if (!strcmp(line, "log_compress"))
            conf_log_compress = atoi(v) > 0;
        else if (!strcmp(line, "cgroup_procs") && n_procs < MAX_PROCS)
            snprintf(conf_procs[n_procs++], PATH_MAX, "%s", v);
    }
    fclose(f);
    if (!conf_log[0])
        die("%s: no log= line", p);
}

static int read_oom_kills(void)
{
    if (!conf_oom[0])
        return 0;
    char buf[4096];
    int fd = open(conf_oom, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    char *p = strstr(buf, "oom_kill ");
    return p ? atoi(p + 9) : 0;
}

/* ---- interactive I/O: stdin, terminal, attach socket --------------------
 *
 * Enabled by "stdin=1" / "tty=1" in shim.conf (exec: in exec-<id>.io). The
 * monitor listens on <bundle>/attach.sock (exec: exec-<id>.sock; bound through
 * /proc/self/fd/<bundle dirfd>/ so a long bundle path does not matter).
 *
 *   CLI --gRPC AttachContainer--> apiserver --gRPC AttachStdin--> execsvc --unix socket--> monitor
 *   (stdin bytes, resize)         (detach keys)                   (frames)                 |
 *                                                                                          +-> stdin pipe or pty master
 *   output: monitor -> json-file log -> execsvc ReadLogs -> apiserver -> CLI (as without -i/-t)
 *
 * Frames, client -> monitor only: 1 type byte, 4-byte big-endian length, payload:
 *   'd' <= 4096 bytes for stdin;  'e' close stdin (ignored with a terminal);
 *   'w' rows, cols (2 x uint16 BE): TIOCSWINSZ on the terminal.
 * While stdin bytes wait for the container to read them, clients are not read
 * (backpressure reaches the CLI through the socket and gRPC flow control).
 *
 * Terminal (as runc's console socket): the monitor makes a socketpair; the init
 * gets one end as fd 4, opens /dev/ptmx in the container (its own devpts), makes
 * the slave its controlling terminal on fds 0/1/2 (setsid, TIOCSCTTY) and sends
 * the master back with SCM_RIGHTS before it execs. The host never opens a device
 * node of the container. Terminal output is one stream, logged as stdout.
 */
#define CONSOLE_FD 4
#define IO_MAX_CLIENTS 8
#define IO_FRAME_MAX 4096

struct io_client {
    int fd;
    size_t len;
    unsigned char buf[5 + IO_FRAME_MAX];
};

static int io_stdin, io_tty;
static int io_listen = -1, io_in_r = -1, io_in_w = -1, io_master = -1;
static int io_console[2] = {-1, -1};
static char io_sock_name[PATH_MAX];
static struct io_client io_clients[IO_MAX_CLIENTS];
static unsigned char io_pending[IO_FRAME_MAX];
static size_t io_pending_len, io_pending_off;
static int io_eof_requested;
static struct stream s_tty = {.fd = -1, .name = "stdout"};

/* key=value lines: tty=1, stdin=1. A missing file means neither. */
static void io_read_conf(const char *name)
{
    char p[PATH_MAX], line[256];
    bundle_path(p, name);
    FILE *f = fopen(p, "re");
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "tty=1", 5))
            io_tty = 1;
        else if (!strncmp(line, "stdin=1", 7))
            io_stdin = 1;
    }
    fclose(f);
}

static int fd_high(int fd)
{
    int n = fcntl(fd, F_DUPFD_CLOEXEC, 10);
    close(fd);
    return n;
}

/* Before the container process exists: the socket, the stdin pipe, the console socketpair.
 * Returns NULL or what failed. */
static const char *io_setup(const char *sock_name)
{
    for (int i = 0; i < IO_MAX_CLIENTS; i++)
        io_clients[i].fd = -1;
    signal(SIGPIPE, SIG_IGN); /* a container that closed its stdin must not kill us */
    snprintf(io_sock_name, sizeof io_sock_name, "%s", sock_name);
    int dfd = open(bundle, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return "open bundle";
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "/proc/self/fd/%d/%s", dfd, sock_name);
    unlink(sa.sun_path);
    io_listen = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int ok = io_listen >= 0 && bind(io_listen, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(io_listen, 8) == 0;
    close(dfd);
    if (!ok)
        return "attach socket";
    if (io_stdin && !io_tty) {
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
            return "stdin pipe";
        io_in_r = fd_high(p[0]);
        io_in_w = fd_high(p[1]);
        fcntl(io_in_w, F_SETFL, O_NONBLOCK);
    }
    if (io_tty) {
        int sp[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
            return "console socketpair";
        io_console[0] = fd_high(sp[0]);
        io_console[1] = fd_high(sp[1]);
    }
    return NULL;
}

/* In the new process, after fds 1-3 are in place: stdin on 0, the console socket on 4.
 * Returns the first fd that may be closed. */
static int io_child_fds(void)
{
    if (io_in_r >= 0)
        dup2(io_in_r, 0);
    if (io_console[1] >= 0) {
        dup2(io_console[1], CONSOLE_FD);
        return CONSOLE_FD + 1;
    }
    return SYNC_FD + 1;
}

/* The monitor's side, once the process exists. */
static void io_parent_close(void)
{
    if (io_in_r >= 0)
        close(io_in_r);
    if (io_console[1] >= 0)
        close(io_console[1]);
    io_in_r = io_console[1] = -1;
}

/* After the command was exec'd: take the terminal master the init sent. NULL or an error. */
static const char *io_receive_master(void)
{
    if (!io_tty)
        return NULL;
    char byte;
    char ctl[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
    ssize_t n;
    while ((n = recvmsg(io_console[0], &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
        ;
    close(io_console[0]);
    io_console[0] = -1;
    struct cmsghdr *c = n > 0 ? CMSG_FIRSTHDR(&mh) : NULL;
    if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
        return "the container sent no terminal";
    memcpy(&io_master, CMSG_DATA(c), sizeof(int));
    io_master = fd_high(io_master);
    fcntl(io_master, F_SETFL, O_NONBLOCK);
    s_tty.fd = io_master;
    io_in_w = fcntl(io_master, F_DUPFD_CLOEXEC, 10);
    return NULL;
}

static void io_close_stdin(void)
{
    if (io_in_w >= 0)
        close(io_in_w);
    io_in_w = -1;
    io_pending_len = io_pending_off = 0;
}

static void io_flush_pending(void)
{
    while (io_pending_off < io_pending_len && io_in_w >= 0) {
        ssize_t w = write(io_in_w, io_pending + io_pending_off, io_pending_len - io_pending_off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN)
            return;
        if (w <= 0) { /* EPIPE/EIO: nobody reads stdin any more */
            io_close_stdin();
            return;
        }
        io_pending_off += (size_t)w;
    }
    io_pending_len = io_pending_off = 0;
    if (io_eof_requested && !io_tty)
        io_close_stdin();
}

static void io_frame(unsigned char type, const unsigned char *p, size_t n)
{
    if (type == 'd' && io_in_w >= 0 && n > 0) {
        memcpy(io_pending, p, n);
        io_pending_len = n;
        io_pending_off = 0;
        io_flush_pending();
    } else if (type == 'e') {
        io_eof_requested = 1;
        if (!io_tty && io_pending_len == 0)
            io_close_stdin();
    } else if (type == 'w' && n == 4 && io_master >= 0) {
        struct winsize ws = {.ws_row = (unsigned short)(p[0] << 8 | p[1]),
                             .ws_col = (unsigned short)(p[2] << 8 | p[3])};
        ioctl(io_master, TIOCSWINSZ, &ws);
    }
}

static void io_drop(struct io_client *c)
{
    close(c->fd);
    c->fd = -1;
    c->len = 0;
}

static void io_process(struct io_client *c);

/* Reads what a client sent and acts on every complete frame (stops while stdin is pending). */
static void io_read_client(struct io_client *c)
{
    ssize_t n = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n <= 0) {
        io_drop(c);
        return;
    }
    c->len += (size_t)n;
    io_process(c);
}

/* Acts on the complete frames a client has sent, until stdin bytes are left pending. */
static void io_process(struct io_client *c)
{
    size_t off = 0;
    while (c->len - off >= 5 && io_pending_len == 0) {
        unsigned char *h = c->buf + off;
        size_t flen = (size_t)h[1] << 24 | (size_t)h[2] << 16 | (size_t)h[3] << 8 | h[4];
        if (flen > IO_FRAME_MAX) {
            io_drop(c);
            return;
        }
        if (c->len - off < 5 + flen)
            break;
        io_frame(h[0], h + 5, flen);
        off += 5 + flen;
    }
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
}

static void io_accept(void)
{
    int fd = accept4(io_listen, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0)
        return;
    for (int i = 0; i < IO_MAX_CLIENTS; i++) {
        if (io_clients[i].fd < 0) {
            io_clients[i].fd = fd;
            io_clients[i].len = 0;
            return;
        }
    }
    close(fd); /* too many clients */
}

/* Chunks as they come, not lines: a prompt without a newline must show at once. */
static int io_pump_tty(void)
{
    char ts[64], buf[LINE_CAP];
    ssize_t n = read(s_tty.fd, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return -1;
    if (n <= 0) { /* EIO: every slave is closed */
        close(s_tty.fd);
        s_tty.fd = io_master = -1;
        return 0;
    }
    now_rfc3339(ts, sizeof ts);
    emit(&s_tty, buf, (size_t)n, ts);
    flush_out();
    return 1;
}

#define IO_NFDS (2 + IO_MAX_CLIENTS + 1)

/* Fills fds[0..IO_NFDS) (negative fds are ignored by poll). */
static void io_poll_fill(struct pollfd *fds)
{
    int waiting = io_pending_len > 0;
    fds[0] = (struct pollfd){io_listen, POLLIN, 0};
    fds[1] = (struct pollfd){s_tty.fd, POLLIN, 0};
    fds[2] = (struct pollfd){waiting ? io_in_w : -1, POLLOUT, 0};
    for (int i = 0; i < IO_MAX_CLIENTS; i++)
        fds[3 + i] = (struct pollfd){waiting ? -1 : io_clients[i].fd, POLLIN, 0};
}

static void io_poll_handle(const struct pollfd *fds)
{
    if (fds[1].revents)
        io_pump_tty();
    if (fds[2].revents) {
        io_flush_pending();
        for (int i = 0; i < IO_MAX_CLIENTS && io_pending_len == 0; i++)
            if (io_clients[i].fd >= 0 && io_clients[i].len > 0)
                io_process(&io_clients[i]);
    }
    for (int i = 0; i < IO_MAX_CLIENTS; i++)
        if (fds[3 + i].revents && io_clients[i].fd >= 0)
            io_read_client(&io_clients[i]);
    if (fds[0].revents)
        io_accept();
}

/* The process exited: log what the terminal still holds, stop listening. */
static void io_finish(void)
{
    if (s_tty.fd >= 0)
        while (io_pump_tty() > 0)
            ;
    if (s_tty.fd >= 0)
        close(s_tty.fd);
    s_tty.fd = io_master = -1;
    if (io_listen >= 0) {
        unlink_in_bundle(io_sock_name);
        close(io_listen);
        io_listen = -1;
    }
}

/* ---- processes -------------------------------------------------------- */

/* Without a pid namespace nothing ends the container's other processes with it: kill
 * what is left in its cgroup (as runc does for a shared pid namespace). Bounded. */
static void kill_leftovers(void)
{
    if (!conf_kill_on_exit[0])
        return;
    for (int round = 0; round < 500; round++) {
        FILE *f = fopen(conf_kill_on_exit, "re");
        if (!f)
            return;
        int pid, found = 0;
        while (fscanf(f, "%d", &pid) == 1) {
            if (pid > 0 && pid != getpid()) {
                kill(pid, SIGKILL);
                found = 1;
            }
        }
        fclose(f);
        if (!found)
            return;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static void close_fds_except(int keep)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return;
    int dfd = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] != '.' && fd > 2 && fd != keep && fd != dfd)
            close(fd);
    }
    closedir(d);
}

static void move_fd(int from, int to)
{
    if (from == to)
        fcntl(to, F_SETFD, 0); /* dup2 would keep CLOEXEC */
    else
        dup2(from, to);
}

/* glibc's sigaction() refuses 32 and 33 (its own), so the inits cannot reset them; a parent
 * that ignores them (GNU make does) would hand that on through execve into the container.
 * The raw system call takes them (struct as the kernel's: handler, flags, restorer, mask). */
static void reset_libc_signals(void)
{
    struct {
        void (*handler)(int);
        unsigned long flags;
        void (*restorer)(void);
        unsigned long mask;
    } dfl = {SIG_DFL, 0, NULL, 0};
    for (int sig = 32; sig <= 33; sig++)
        syscall(SYS_rt_sigaction, sig, &dfl, NULL, sizeof dfl.mask);
}

/* Runs in the new namespaces; becomes the init (PID 1): cinit.c's or the Python one. */
static void child(char **init_argv, int netns_fd, int out_w, int err_w, int sync_w)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    reset_libc_signals();
    if (netns_fd >= 0 && setns(netns_fd, CLONE_NEWNET) < 0) {
        dprintf(sync_w, "other\nsetns(%s): %s", conf_netns, strerror(errno));
        _exit(1);
    }
    /* 0 is /dev/null already (the monitor's). Order: fds are all >= 3. */
    move_fd(out_w, 1);
    move_fd(err_w, 2);
    move_fd(sync_w, SYNC_FD);
    syscall(SYS_close_range, io_child_fds(), ~0U, 0);
    cinit_run(bundle); /* the set-up in C when execsvc wrote init.conf (never returns then) */
    execv(init_argv[0], init_argv);
    dprintf(SYNC_FD, "other\nexecve(%s): %s", init_argv[0], strerror(errno));
    _exit(1);
}

/* After the container exited: read what is left without blocking, then close. */
static void drain(struct stream *st)
{
    if (st->fd < 0)
        return;
    fcntl(st->fd, F_SETFL, O_NONBLOCK);
    while (st->fd >= 0 && pump(st) > 0)
        ;
    if (st->fd >= 0) {
        char ts[64];
        now_rfc3339(ts, sizeof ts);
        if (st->len > 0)
            emit(st, st->buf, st->len, ts);
        st->len = 0;
        flush_out();
        close(st->fd);
        st->fd = -1;
    }
}

static void report(int fd, char kind, const char *msg)
{
    char buf[PATH_MAX + 512];
    snprintf(buf, sizeof buf, "%c%s", kind, msg);
    write_all(fd, buf, strlen(buf));
    close(fd);
}

static void fail(int report_fd, const char *kind, const char *msg)
{
    char json[6000];
    out_len = 0;
    json_escape((const unsigned char *)msg, strnlen(msg, 700));
    snprintf(json, sizeof json, "{\"kind\": \"%s\", \"message\": \"%.*s\"}\n", kind, (int)out_len, out);
    out_len = 0;
    write_file_atomic("start-error.json", json);
    unlink_in_bundle("init.pid");
    unlink_in_bundle("shim.pid");
    unlink_in_bundle("start.json");
    char code = !strcmp(kind, "not-found") ? 'n' : !strcmp(kind, "not-executable") ? 'x' : 'e';
    report(report_fd, code, msg);
    _exit(1);
}

/* Detach from the caller: own session, cwd /, /dev/null on 0-2, no other fd but keep. */
static void detach(int keep)
{
    setsid();
    if (chdir("/") < 0)
        _exit(1);
    int devnull = open("/dev/null", O_RDWR);
    if (devnull < 0)
        _exit(1);
    dup2(devnull, 0);
    dup2(devnull, 1);
    dup2(devnull, 2);
    close_fds_except(keep);
}

static int send_release(int sock, char **init_argv, unsigned long unshare_flags, const int *fds, int nfds,
                        int has_netns, int has_stdin, int has_console);

/* standby mode: the child cloned at standby (already in the container's cgroups, blocked on
 * standby_sock) and what it must unshare when released. 0: clone one now (the cold path). */
static pid_t standby_pid;
static int standby_sock = -1;
static unsigned long standby_unshare;

static void monitor(int report_fd, char **init_argv)
{
    char msg[PATH_MAX + 256], buf[512];
    if (!standby_pid)
        detach(report_fd);

    log_fd = open(conf_log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (log_fd < 0) {
        snprintf(msg, sizeof msg, "open log %s: %s", conf_log, strerror(errno));
        fail(report_fd, "other", msg);
    }
    struct stat lst;
    if (log_fd >= 0 && fstat(log_fd, &lst) == 0)
        log_size = (long long)lst.st_size; /* a restarted container appends to its log */
    int netns_fd = -1;
    if (conf_netns[0] && (netns_fd = open(conf_netns, O_RDONLY | O_CLOEXEC)) < 0) {
        snprintf(msg, sizeof msg, "open netns %s: %s", conf_netns, strerror(errno));
        fail(report_fd, "other", msg);
    }
    int po[2], pe[2], ps[2];
    if (pipe2(po, O_CLOEXEC) || pipe2(pe, O_CLOEXEC) || pipe2(ps, O_CLOEXEC))
        fail(report_fd, "other", "pipe2 failed");
    const char *io_err = io_setup("attach.sock");
    if (io_err) {
        snprintf(msg, sizeof msg, "%s: %s", io_err, strerror(errno));
        fail(report_fd, "other", msg);
    }

    /* Block SIGCHLD before clone so its arrival cannot be missed; the child unblocks. */
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);

    pid_t pid = standby_pid;
    if (pid > 0) {
        /* The warm slot's child: hand it its fds and argv; it unshares the rest and goes on as
         * child() below. It is in the container's cgroups already: no cgroup.procs write. */
        int fds[6], n = 0;
        fds[n++] = po[1];
        fds[n++] = pe[1];
        fds[n++] = ps[1];
        if (netns_fd >= 0)
            fds[n++] = netns_fd;
        if (io_in_r >= 0)
            fds[n++] = io_in_r;
        if (io_console[1] >= 0)
            fds[n++] = io_console[1];
        if (send_release(standby_sock, init_argv, standby_unshare, fds, n, netns_fd >= 0, io_in_r >= 0,
                         io_console[1] >= 0) < 0) {
            snprintf(msg, sizeof msg, "release the standby process: %s", strerror(errno));
            kill(pid, SIGKILL);
            while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                ;
            fail(report_fd, "other", msg);
        }
        close(standby_sock);
        standby_sock = -1;
        n_procs = 0; /* joined at standby */
    } else {
        pid = (pid_t)syscall(SYS_clone, conf_flags | SIGCHLD, NULL, NULL, NULL, NULL);
        if (pid < 0) {
            snprintf(msg, sizeof msg, "clone(0x%lx): %s", conf_flags, strerror(errno));
            fail(report_fd, "other", msg);
        }
        if (pid == 0)
            child(init_argv, netns_fd, po[1], pe[1], ps[1]);
    }
    close(po[1]);
    close(pe[1]);
    close(ps[1]);
    io_parent_close();
    if (netns_fd >= 0)
        close(netns_fd);

    char ts[64];
    now_rfc3339(ts, sizeof ts);
    /* Join the cgroups for the child while its interpreter starts: on cgroup v1 the first
     * move waits for an RCU grace period (~10 ms), hidden here. The init joins them again
     * (a no-op by then) before it sets anything up, and reports an error there. */
    snprintf(buf, sizeof buf, "%d", (int)pid);
    for (int i = 0; i < n_procs; i++) {
        int cfd = open(conf_procs[i], O_WRONLY | O_CLOEXEC);
        if (cfd >= 0) {
            if (write(cfd, buf, strlen(buf)) < 0) {
                /* the init's own join reports it */
            }
            close(cfd);
        }
    }
    snprintf(buf, sizeof buf, "%d\n", (int)getpid());
    write_file_atomic("shim.pid", buf);
    snprintf(buf, sizeof buf, "%d\n", (int)pid);
    write_file_atomic("init.pid", buf);
    snprintf(buf, sizeof buf,
             "{\"pid\": %d, \"pid_starttime\": %llu, \"shim_pid\": %d, \"shim_starttime\": %llu, "
             "\"started_at\": \"%s\"}\n",
             (int)pid, proc_starttime(pid), (int)getpid(), proc_starttime(getpid()), ts);
    write_file_atomic("start.json", buf);

    /* Wait for the init: EOF means it reached execve of the user command. */
    size_t got = read_full(ps[0], msg, sizeof msg);
    close(ps[0]);
    if (got > 0) {
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        char *nl = strchr(msg, '\n');
        const char *text = nl ? nl + 1 : msg;
        if (nl)
            *nl = 0;
        fail(report_fd, msg, text);
    }
    if ((io_err = io_receive_master())) {
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        fail(report_fd, "other", io_err);
    }
    report(report_fd, '0', "");

    int sfd = signalfd(-1, &chld, SFD_CLOEXEC);
    s_out.fd = po[0];
    s_err.fd = pe[0];
    int status = 0, exited = 0;
    while (!exited || s_out.fd >= 0 || s_err.fd >= 0) {
        struct pollfd fds[3 + IO_NFDS] = {{s_out.fd, POLLIN, 0}, {s_err.fd, POLLIN, 0}, {exited ? -1 : sfd, POLLIN, 0}};
        io_poll_fill(fds + 3);
        if (poll(fds, 3 + IO_NFDS, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (fds[0].revents)
            pump(&s_out);
        if (fds[1].revents)
            pump(&s_err);
        io_poll_handle(fds + 3);
        if (fds[2].revents) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof si) < 0) {
                /* nothing: waitpid below decides */
            }
            compress_wait(0);
            if (waitpid(pid, &status, WNOHANG) == pid) {
                exited = 1;
                /* Drain what is buffered; don't wait for writers outside the pid ns. */
                kill_leftovers();
                drain(&s_out);
                drain(&s_err);
                break;
            }
        }
    }
    io_finish();
    int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + sig;
    now_rfc3339(ts, sizeof ts);
    snprintf(buf, sizeof buf, "{\"exit_code\": %d, \"signal\": %d, \"finished_at\": \"%s\", \"oom_killed\": %s}\n",
             code, sig, ts, read_oom_kills() > 0 ? "true" : "false");
    write_file_atomic("exit.json", buf);
    compress_wait(1); /* nothing outlives the monitor */
    _exit(0);
}

/* ---- exec mode: another process in a running container ----------------
 *
 *   skiff-shim exec <bundle-dir> <exec-id> -- <helper argv...>
 *
 * The same handshake as above, with the helper (exec_init.py, run from the host)
 * in place of the init. The monitor is a child subreaper: the helper joins the
 * container's namespaces and cgroup (non-dumpable), forks the process that will
 * exec the command (only a fork puts it in the pid namespace) and exits at once,
 * so that process is reparented to this monitor, which waits for it.
 *
 *   monitor --fork--> helper: setns(ipc,uts,net,pid,mnt) --fork--> process: security, execve
 *                       | exit 0 (handed over)                      | sync fd 3: EOF = started
 *
 * Files, all in the bundle: exec-<id>-json.log (json-file log), exec-<id>.start.json
 * (the monitor's pid and start time) and exec-<id>.exit.json (atomic).
 */
static const char *exec_id;

static void exec_name(char *dst, size_t n, const char *suffix)
{
    snprintf(dst, n, "exec-%s%s", exec_id, suffix);
}

static void exec_fail(int report_fd, const char *kind, const char *msg)
{
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
        ; /* the helper and a failed process: nothing may outlive a failed start */
    char code = !strcmp(kind, "not-found") ? 'n' : !strcmp(kind, "not-executable") ? 'x' : 'e';
    report(report_fd, code, msg);
    _exit(1);
}

static void exec_monitor(int report_fd, char **helper_argv)
{
    char msg[PATH_MAX + 256], buf[512], name[PATH_MAX];
    setsid();
    if (chdir("/") < 0)
        _exit(1);
    int devnull = open("/dev/null", O_RDWR);
    if (devnull < 0)
        _exit(1);
    dup2(devnull, 0);
    dup2(devnull, 1);
    dup2(devnull, 2);
    close_fds_except(report_fd);
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
        exec_fail(report_fd, "other", "prctl(PR_SET_CHILD_SUBREAPER) failed");

    char log_path[PATH_MAX];
    exec_name(name, sizeof name, "-json.log");
    bundle_path(log_path, name);
    log_fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (log_fd < 0) {
        snprintf(msg, sizeof msg, "open log %s: %s", log_path, strerror(errno));
        exec_fail(report_fd, "other", msg);
    }
    int po[2], pe[2], ps[2];
    if (pipe2(po, O_CLOEXEC) || pipe2(pe, O_CLOEXEC) || pipe2(ps, O_CLOEXEC))
        exec_fail(report_fd, "other", "pipe2 failed");
    exec_name(name, sizeof name, ".io");
    io_read_conf(name);
    exec_name(name, sizeof name, ".sock");
    const char *io_err = io_setup(name);
    if (io_err) {
        snprintf(msg, sizeof msg, "%s: %s", io_err, strerror(errno));
        exec_fail(report_fd, "other", msg);
    }
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);

    pid_t helper = fork();
    if (helper < 0)
        exec_fail(report_fd, "other", "fork failed");
    if (helper == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        reset_libc_signals();
        move_fd(po[1], 1);
        move_fd(pe[1], 2);
        move_fd(ps[1], SYNC_FD);
        syscall(SYS_close_range, io_child_fds(), ~0U, 0);
        execv(helper_argv[0], helper_argv);
        dprintf(SYNC_FD, "other\nexecve(%s): %s", helper_argv[0], strerror(errno));
        _exit(1);
    }
    close(po[1]);
    close(pe[1]);
    close(ps[1]);
    io_parent_close();
    snprintf(buf, sizeof buf, "{\"shim_pid\": %d, \"shim_starttime\": %llu}\n", (int)getpid(),
             proc_starttime(getpid()));
    exec_name(name, sizeof name, ".start.json");
    write_file_atomic(name, buf);

    /* EOF: the helper has exited and the process has exec'd the command. */
    size_t got = read_full(ps[0], msg, sizeof msg);
    close(ps[0]);
    if (got > 0) {
        char *nl = strchr(msg, '\n');
        const char *text = nl ? nl + 1 : msg;
        if (nl)
            *nl = 0;
        exec_fail(report_fd, msg, text);
    }
    int status = 0;
    while (waitpid(helper, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        snprintf(msg, sizeof msg, "exec helper failed (status 0x%x)", status);
        exec_fail(report_fd, "other", msg);
    }
    if ((io_err = io_receive_master()))
        exec_fail(report_fd, "other", io_err); /* kills nothing: the process may have exited */
    report(report_fd, '0', "");

    int sfd = signalfd(-1, &chld, SFD_CLOEXEC);
    s_out.fd = po[0];
    s_err.fd = pe[0];
    status = 0;
    int exited = 0;
    while (!exited) {
        /* The helper is reaped: any child now is the process (reparented to us). */
        pid_t r;
        while ((r = waitpid(-1, &status, WNOHANG)) < 0 && errno == EINTR)
            ;
        if (r > 0 || (r < 0 && errno == ECHILD)) {
            exited = 1;
            drain(&s_out);
            drain(&s_err);
            break;
        }
        if (s_out.fd < 0 && s_err.fd < 0 && io_listen < 0) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof si) < 0 && errno != EINTR)
                break;
            continue;
        }
        struct pollfd fds[3 + IO_NFDS] = {{s_out.fd, POLLIN, 0}, {s_err.fd, POLLIN, 0}, {sfd, POLLIN, 0}};
        io_poll_fill(fds + 3);
        if (poll(fds, 3 + IO_NFDS, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (fds[0].revents)
            pump(&s_out);
        if (fds[1].revents)
            pump(&s_err);
        io_poll_handle(fds + 3);
        if (fds[2].revents) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof si) < 0) {
                /* nothing: waitpid above decides */
            }
        }
    }
    io_finish();
    int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + sig;
    char ts[64];
    now_rfc3339(ts, sizeof ts);
    snprintf(buf, sizeof buf, "{\"exit_code\": %d, \"signal\": %d, \"finished_at\": \"%s\"}\n", code, sig, ts);
    exec_name(name, sizeof name, ".exit.json");
    write_file_atomic(name, buf);
    _exit(0);
}

/* Forks the monitor (which detaches) and relays its start report: 0 once the command
 * runs, else the message on stderr and Docker's exit code (127 not found, 126 not
 * executable, 1 otherwise). */
static int start_monitor(void (*run)(int report_fd, char **argv), char **argv)
{
    int rp[2];
    if (pipe2(rp, O_CLOEXEC) < 0)
        die("pipe2: %s", strerror(errno));
    pid_t m = fork();
    if (m < 0)
        die("fork: %s", strerror(errno));
    if (m == 0) {
        close(rp[0]);
        run(rp[1], argv);
        _exit(1);
    }
    close(rp[1]);
    char msg[PATH_MAX + 512];
    size_t got = read_full(rp[0], msg, sizeof msg);
    if (got == 0)
        die("monitor exited before reporting the start");
    if (msg[0] == '0')
        return 0;
    fprintf(stderr, "%s\n", msg + 1);
    return msg[0] == 'n' ? 127 : msg[0] == 'x' ? 126 : 1;
}

static int run_exec(int argc, char **argv)
{
    if (argc < 6 || strcmp(argv[4], "--") != 0)
        die("usage: skiff-shim exec <bundle-dir> <exec-id> -- <helper argv...>");
    bundle = argv[2];
    exec_id = argv[3];
    if (bundle[0] != '/')
        die("bundle path must be absolute: %s", bundle);
    if (!exec_id[0] || strchr(exec_id, '/') || exec_id[0] == '.')
        die("invalid exec id: %s", exec_id);
    return start_monitor(exec_monitor, &argv[5]);
}

/* ---- standby mode: a warm slot ------------------------------------------
 *
 *   skiff-shim standby <fd> <clone_flags> <cgroup.procs>...   (<fd>: a SOCK_SEQPACKET socket to execsvc)
 *
 * The start path without a fork, an exec or a cgroup move (execsvc's slots.py). The monitor
 * (which stays in execsvc's cgroup) clones the future PID 1 with <clone_flags> (the pid, uts
 * and ipc namespaces), moves it into the slot's cgroups (each <cgroup.procs> given) and sends
 * "r<pid> <starttime> <monitor pid> <starttime>" on the socket (moved to fd 3); the child waits on a socketpair. execsvc renames the slot's cgroups to the
 * container's, writes its limits and bundle and sends one packet on fd 3:
 *
 *   g <bundle> \0 <unshare flags, hex> \0 <init argv, each \0-terminated>
 *
 * The monitor then goes on exactly as a container's monitor started the cold way (monitor()),
 * except that it hands the child its fds (stdout/stderr/sync pipes, the netns, stdin, the
 * console socket: SCM_RIGHTS) instead of cloning it; the child unshares the mount (and
 * network) namespace then, so its view of the host's mounts is the one of the start, not a
 * stale copy that would hold other containers' mounts alive. The start report ('0', 'n', 'x',
 * 'e' + message) goes back on fd 3 instead of the original process's exit code.
 * EOF on fd 3 (execsvc exited or dropped the slot) before a go: the child is killed and the
 * monitor exits. A standby child that dies makes the monitor exit (execsvc sees EOF).
 */
#define CONTROL_FD 3
#define RELEASE_MAX 16384

/* The release packet, monitor -> child: "<unshare hex>\0<N|I|C flags>\0<bundle>\0<netns>\0<argv>..."
 * with the fds in the order out, err, sync, [netns], [stdin], [console]. */
static int send_release(int sock, char **init_argv, unsigned long unshare_flags, const int *fds, int nfds,
                        int has_netns, int has_stdin, int has_console)
{
    static char payload[RELEASE_MAX];
    size_t len = (size_t)snprintf(payload, sizeof payload, "%lx", unshare_flags) + 1;
    len += (size_t)snprintf(payload + len, sizeof payload - len, "%s%s%s-", has_netns ? "N" : "",
                            has_stdin ? "I" : "", has_console ? "C" : "") + 1;
    const char *parts[2] = {bundle, conf_netns};
    for (int i = 0; i < 2; i++) {
        size_t n = strlen(parts[i]) + 1;
        if (len + n > sizeof payload)
            return errno = E2BIG, -1;
        memcpy(payload + len, parts[i], n);
        len += n;
    }
    for (char **a = init_argv; *a; a++) {
        size_t n = strlen(*a) + 1;
        if (len + n > sizeof payload)
            return errno = E2BIG, -1;
        memcpy(payload + len, *a, n);
        len += n;
    }
    char ctl[CMSG_SPACE(sizeof(int) * 6)];
    memset(ctl, 0, sizeof ctl);
    struct iovec iov = {.iov_base = payload, .iov_len = len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl,
                        .msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    ssize_t w;
    while ((w = sendmsg(sock, &mh, MSG_NOSIGNAL)) < 0 && errno == EINTR)
        ;
    return w < 0 ? -1 : 0;
}

/* The standby child: waits for its release, then becomes the container's init as child() does. */
static void standby_child(int sock)
{
    static char payload[RELEASE_MAX];
    static char *argv[512];
    char ctl[CMSG_SPACE(sizeof(int) * 6)];
    struct iovec iov = {.iov_base = payload, .iov_len = sizeof payload - 1};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
    ssize_t n;
    while ((n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
        ;
    if (n <= 0)
        _exit(0); /* the monitor is gone or dropped the slot */
    payload[n] = 0;
    int fds[6], nfds = 0;
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
        nfds = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        if (nfds > 6)
            nfds = 6;
        memcpy(fds, CMSG_DATA(c), sizeof(int) * (size_t)nfds);
    }
    close(sock);
    if (nfds < 3)
        _exit(1);
    /* fields */
    char *f[4], *p = payload, *end = payload + n;
    for (int i = 0; i < 4; i++) {
        f[i] = p;
        p += strlen(p) + 1;
        if (p > end)
            _exit(1);
    }
    int argc = 0;
    while (p < end && argc < 511) {
        argv[argc++] = p;
        p += strlen(p) + 1;
    }
    argv[argc] = NULL;
    unsigned long unshare_flags = strtoul(f[0], NULL, 16);
    if (strlen(f[2]) >= sizeof standby_bundle || strlen(f[3]) >= sizeof conf_netns)
        _exit(1);
    memcpy(standby_bundle, f[2], strlen(f[2]) + 1);
    bundle = standby_bundle;
    memcpy(conf_netns, f[3], strlen(f[3]) + 1);
    int k = 3, netns_fd = -1;
    if (strchr(f[1], 'N') && k < nfds)
        netns_fd = fds[k++];
    io_in_r = strchr(f[1], 'I') && k < nfds ? fds[k++] : -1;
    io_console[1] = strchr(f[1], 'C') && k < nfds ? fds[k++] : -1;
    if (unshare_flags && unshare((int)unshare_flags) < 0) {
        dprintf(fds[2], "other\nunshare(0x%lx): %s", unshare_flags, strerror(errno));
        _exit(1);
    }
    if (argc == 0) {
        dprintf(fds[2], "other\nno init command");
        _exit(1);
    }
    child(argv, netns_fd, fds[0], fds[1], fds[2]);
}

static void control_send(const char *fmt, ...)
{
    char buf[PATH_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof buf - 1)
        n = (int)sizeof buf - 1;
    while (send(CONTROL_FD, buf, (size_t)n, MSG_NOSIGNAL) < 0 && errno == EINTR)
        ;
}

static void standby_monitor(unsigned long flags, char **procs, int nprocs)
{
    detach(CONTROL_FD);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0) {
        control_send("esocketpair: %s", strerror(errno));
        _exit(1);
    }
    pid_t pid = (pid_t)syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, NULL);
    if (pid < 0) {
        control_send("eclone(0x%lx): %s", flags, strerror(errno));
        _exit(1);
    }
    if (pid == 0) {
        /* nothing of the monitor's but the socket: fd 3 (execsvc's) must see EOF with it */
        int keep = sp[1];
        syscall(SYS_close_range, 3, (unsigned)keep - 1, 0);
        syscall(SYS_close_range, (unsigned)keep + 1, ~0U, 0);
        standby_child(keep);
        _exit(1);
    }
    close(sp[1]);
    signal(SIGPIPE, SIG_IGN); /* execsvc may close its end at any time */
    char buf[32];
    snprintf(buf, sizeof buf, "%d", (int)pid);
    for (int i = 0; i < nprocs; i++) {
        int cfd = open(procs[i], O_WRONLY | O_CLOEXEC);
        if (cfd < 0 || write(cfd, buf, strlen(buf)) < 0) {
            control_send("ejoin cgroup %s: %s", procs[i], strerror(errno));
            kill(pid, SIGKILL);
            _exit(1);
        }
        close(cfd);
    }
    control_send("r%d %llu %d %llu", (int)pid, proc_starttime(pid), (int)getpid(), proc_starttime(getpid()));

    int sfd = signalfd(-1, &chld, SFD_CLOEXEC);
    static char packet[RELEASE_MAX];
    for (;;) {
        struct pollfd fds[2] = {{CONTROL_FD, POLLIN, 0}, {sfd, POLLIN, 0}};
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (fds[1].revents) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof si) < 0) {
                /* waitpid decides */
            }
            if (waitpid(pid, NULL, WNOHANG) == pid)
                _exit(1); /* the standby child died: the slot is gone */
        }
        if (!fds[0].revents)
            continue;
        ssize_t n;
        while ((n = recv(CONTROL_FD, packet, sizeof packet - 1, 0)) < 0 && errno == EINTR)
            ;
        if (n <= 0 || packet[0] != 'g')
            break; /* EOF: execsvc is gone or dropped the slot */
        packet[n] = 0;
        /* g <bundle> \0 <unshare hex> \0 argv... */
        char *p = packet + 1, *end = packet + n;
        if (strlen(p) >= sizeof standby_bundle)
            break;
        memcpy(standby_bundle, p, strlen(p) + 1);
        p += strlen(p) + 1;
        if (p >= end)
            break;
        standby_unshare = strtoul(p, NULL, 16);
        p += strlen(p) + 1;
        static char *argv[512];
        int argc = 0;
        while (p < end && argc < 511) {
            argv[argc++] = p;
            p += strlen(p) + 1;
        }
        argv[argc] = NULL;
        bundle = standby_bundle;
        if (bundle[0] != '/' || argc == 0)
            break;
        close(sfd);
        standby_pid = pid;
        standby_sock = sp[0];
        read_conf();
        io_read_conf("shim.conf");
        compress_ok = 1;
        monitor(CONTROL_FD, argv); /* never returns */
        _exit(1);
    }
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
    _exit(0);
}

static int run_standby(int argc, char **argv)
{
    if (argc < 4)
        die("usage: skiff-shim standby <fd> <clone_flags> <cgroup.procs>...");
    int fd = atoi(argv[2]);
    unsigned long flags = strtoul(argv[3], NULL, 0);
    struct stat st;
    if (fd < 3 || fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode))
        die("standby: fd %s must be the control socket", argv[2]);
    if (fd != CONTROL_FD) {
        if (dup2(fd, CONTROL_FD) < 0)
            die("dup2: %s", strerror(errno));
        close(fd);
    }
    pid_t m = fork();
    if (m < 0)
        die("fork: %s", strerror(errno));
    if (m == 0)
        standby_monitor(flags, &argv[4], argc - 4);
    return 0; /* the monitor reports on fd 3; the caller only reaps this process */
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "standby"))
        return run_standby(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "exec"))
        return run_exec(argc, argv);
    if (argc < 4 || strcmp(argv[2], "--") != 0)
        die("usage: skiff-shim <bundle-dir> -- <init argv...>");
    bundle = argv[1];
    if (bundle[0] != '/')
        die("bundle path must be absolute: %s", bundle);
    read_conf();
    io_read_conf("shim.conf");
    compress_ok = 1;

    return start_monitor(monitor, &argv[3]);
}
