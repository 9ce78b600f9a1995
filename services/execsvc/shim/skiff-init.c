/*
 * skiff-init: the container's PID 1 for `skiff run --init` (Docker's docker-init).
 *
 *   /sbin/skiff-init [--] command [args...]
 *
 * Bind-mounted read-only into the container by the init set-up and exec'd in
 * place of the user's command, which it runs as its only child. It then:
 *   - forwards every signal it receives to the child (PID 1 in a pid namespace
 *     has no default actions, so without this `kill -TERM 1` would do nothing);
 *   - reaps every zombie reparented to it (orphans of the child's descendants);
 *   - exits with the child's status (128 + signal if it was killed), which
 *     ends the container: the kernel kills what is left in the namespace.
 *
 * Statically linked: images like busybox have no libc. No allocation, no
 * stdio after start-up; one loop around sigwaitinfo() with all signals blocked,
 * so no signal can be lost between two waits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Raised by the process's own faults: never blocked, never forwarded. */
static const int synchronous[] = {SIGFPE, SIGILL, SIGSEGV, SIGBUS, SIGABRT, SIGTRAP, SIGSYS};

static int status_code(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return 1;
}

int main(int argc, char **argv)
{
    int first = 1;
    if (first < argc && strcmp(argv[first], "--") == 0)
        first++;
    if (first >= argc) {
        fprintf(stderr, "usage: skiff-init [--] command [args...]\n");
        return 2;
    }

    sigset_t all, old;
    sigfillset(&all);
    for (size_t i = 0; i < sizeof synchronous / sizeof synchronous[0]; i++)
        sigdelset(&all, synchronous[i]);
    if (sigprocmask(SIG_SETMASK, &all, &old) != 0) {
        perror("skiff-init: sigprocmask");
        return 1;
    }

    pid_t child = fork();
    if (child < 0) {
        perror("skiff-init: fork");
        return 1;
    }
    if (child == 0) {
        /* The command starts with the signal mask this process started with. */
        sigprocmask(SIG_SETMASK, &old, NULL);
        execvp(argv[first], &argv[first]);
        fprintf(stderr, "skiff-init: exec %s: %s\n", argv[first], strerror(errno));
        _exit(errno == ENOENT ? 127 : 126);
    }

    for (;;) {
        siginfo_t info;
        int sig = sigwaitinfo(&all, &info);
        if (sig < 0) {
            if (errno == EINTR)
                continue;
            perror("skiff-init: sigwaitinfo");
            return 1;
        }
        if (sig != SIGCHLD) {
            /* The child may be gone already (its SIGCHLD is next in the queue): ESRCH is fine. */
            kill(child, sig);
            continue;
        }
        int status;
        pid_t pid;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
            if (pid == child)
                return status_code(status);
        }
    }
}
