/* exec: one process per request, its stdin, stdout and stderr streamed apart
 * (or one PTY), signals, resize, a timeout, and its exit status.
 *
 * The child is made with vfork() under the reaper's lock (reaper.c), so its
 * status comes back through the eventfd registered with it. Between vfork()
 * and execve() the child only makes async-signal-safe calls, and changes
 * nothing of the memory it shares with us but its own stack. A failure
 * there (chdir, setuid, execve) is written to a close-on-exec pipe, so the
 * host hears "cannot execute 'x': No such file or directory" instead of an
 * exit status of 127.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "exec.h"

#define OUT_CHUNK 65536

/* ---- the child, between vfork() and execve(): async-signal-safe calls only ---- */

static void report(int fd, int stage) __attribute__((noreturn));
static void report(int fd, int stage)
{
    struct failure f = {stage, errno};
    (void)!write(fd, &f, sizeof f);
    _exit(127);
}

static void exec_search(char *const argv[], char *const envp[])
{
    const char *file = argv[0], *path = DEFAULT_PATH;
    if (strchr(file, '/')) {
        execve(file, argv, envp);
        return;
    }
    for (char *const *e = envp; *e; e++)
        if (strncmp(*e, "PATH=", 5) == 0)
            path = *e + 5;
    int seen_eacces = 0;
    size_t flen = strlen(file);
    for (const char *p = path;; p++) {
        const char *end = strchr(p, ':');
        size_t dlen = end ? (size_t)(end - p) : strlen(p);
        char buf[4096];
        if (dlen + flen + 2 <= sizeof buf) {
            memcpy(buf, p, dlen);
            buf[dlen] = '/';
            memcpy(buf + dlen + (dlen ? 1 : 0), file, flen + 1);
            if (dlen == 0)
                buf[flen] = '\0';
            execve(buf, argv, envp);
            if (errno == EACCES)
                seen_eacces = 1;
            else if (errno != ENOENT && errno != ENOTDIR)
                return;
        }
        if (!end)
            break;
        p = end;
    }
    errno = seen_eacces ? EACCES : ENOENT;
}

static __attribute__((noreturn)) void child(const struct request *r, const int fds[3],
                                           const char *slave, int errfd)
{
    sigset_t none;
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigemptyset(&none);
    sigaction(SIGPIPE, &dfl, NULL);
    sigprocmask(SIG_SETMASK, &none, NULL);
    setsid();
    if (r->pty) {
        int s = open(slave, O_RDWR);
        if (s < 0 || ioctl(s, TIOCSCTTY, 0) < 0)
            report(errfd, STAGE_PTY);
        for (int i = 0; i < 3; i++)
            dup2(s, i);
        if (s > 2)
            close(s);
    } else {
        for (int i = 0; i < 3; i++)
            dup2(fds[i], i);
    }
    if (r->cwd && chdir(r->cwd) < 0)
        report(errfd, STAGE_CWD);
    /* raw system calls: libc's set*id() act on every thread, which a vfork child shares */
    if (r->set_ids && (syscall(SYS_setgroups, r->ngroups, r->groups) < 0 ||
                       syscall(SYS_setgid, r->gid) < 0 || syscall(SYS_setuid, r->uid) < 0))
        report(errfd, STAGE_IDS);
    exec_search(r->argv, r->envp);
    report(errfd, STAGE_EXEC);
}

/* vfork(): the child borrows our memory until execve() (no page tables copied, as
 * fork() would for every thread's memory); it never returns here. */
static __attribute__((noinline)) pid_t start_child(const struct request *r, const int fds[3],
                                                   const char *slave, int errfd)
{
    pid_t pid = vfork();
    if (pid == 0)
        child(r, fds, slave, errfd);
    return pid;
}

/* ---- the parent ---- */

struct running {
    struct conn *c;
    struct child ch;
    int in, out, err; /* our ends: stdin to write, stdout and stderr to read (PTY: master) */
    int slave;        /* a PTY's slave, held open until the process ends */
    char *buf;
    int pty;
    int stdin_open, out_open, err_open;
    int timed_out;
};

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Read what one output has; -1 when the host is gone. */
static int pump(struct running *p, int *fd, int kind, int *open_, int drain)
{
    char *buf = p->buf;
    for (;;) {
        ssize_t n = read(*fd, buf, OUT_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n > 0) {
            if (frame_send(p->c, kind, buf, (size_t)n) < 0)
                return -1;
            if (drain)
                continue;
            return 0;
        }
        if (n < 0 && errno == EAGAIN)
            return 0;
        /* EOF, or EIO on a PTY whose other side is closed: said with what comes next */
        *open_ = 0;
        if (frame_queue(p->c, kind, "", 0) < 0)
            return -1;
        if (p->pty && fd == &p->out)
            return 0; /* the PTY's one fd: closed with the stdin side */
        close_fd(fd);
        return 0;
    }
}

static void end_stdin(struct running *p)
{
    p->stdin_open = 0;
    if (p->pty) {
        char eof = 4; /* VEOF: end of input at the start of a line */
        (void)!write(p->in, &eof, 1);
    } else {
        close_fd(&p->in);
    }
}

/* One frame from the host while the process runs; pending is set to stdin bytes. */
static int host_frame(struct running *p, const unsigned char **pending, size_t *left)
{
    struct conn *c = p->c;
    if (frame_recv(c) < 0)
        return -1;
    if (c->kind == FRAME_DATA) {
        if (!p->stdin_open)
            return 0;
        if (c->len == 0)
            end_stdin(p);
        else if (p->in >= 0) {
            *pending = c->payload;
            *left = c->len;
        }
        return 0;
    }
    char err[128];
    struct arena *a = arena_new();
    struct jval *req = a ? json_parse(a, (char *)c->payload, c->len, err, sizeof err) : NULL;
    int bad = 0;
    const char *op = req ? jstr(req, "op", &bad) : NULL;
    long long sig = 0, rows = 0, cols = 0;
    if (op && strcmp(op, "signal") == 0 && jint(req, "signal", &sig) == 1 && sig > 0 && sig < 65) {
        if (!jbool(req, "group", 0, &bad) || kill(-p->ch.pid, (int)sig) < 0)
            kill(p->ch.pid, (int)sig);
    } else if (op && strcmp(op, "resize") == 0 && jint(req, "rows", &rows) == 1 &&
               jint(req, "cols", &cols) == 1 && rows > 0 && cols > 0 && rows < 65536 &&
               cols < 65536) {
        struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
        if (p->pty)
            ioctl(p->out, TIOCSWINSZ, &ws);
    } else {
        arena_free(a);
        c->lost = 1;
        send_error(c, "protocol", "while a process runs, only data frames (its stdin), "
                   "{\"op\": \"signal\", \"signal\": N} and {\"op\": \"resize\", \"rows\": R, "
                   "\"cols\": C} may be sent; the connection is closed and the process killed");
        return -1;
    }
    arena_free(a);
    return 0;
}

static int result(struct running *p)
{
    int st = p->ch.status;
    struct jw w;
    jw_init(&w);
    jw_begin(&w);
    jw_kbool(&w, "ok", 1);
    if (WIFEXITED(st))
        jw_kint(&w, "exit_code", WEXITSTATUS(st));
    else
        jw_knull(&w, "exit_code");
    if (WIFSIGNALED(st))
        jw_kint(&w, "signal", WTERMSIG(st));
    else
        jw_knull(&w, "signal");
    jw_kbool(&w, "timed_out", p->timed_out);
    jw_kint(&w, "pid", p->ch.pid);
    jw_end(&w);
    int r = w.failed ? -1 : frame_queue(p->c, FRAME_CONTROL, w.buf, w.len);
    jw_free(&w);
    return r < 0 ? -1 : frame_flush(p->c);
}

/* The loop while the process runs: 0 when its result was sent, -1 when the host is gone. */
static int supervise(struct running *p, double timeout)
{
    struct conn *c = p->c;
    const unsigned char *pending = NULL;
    size_t left = 0;
    double deadline = timeout > 0 ? monotonic() + timeout : 0;
    int exited = 0;
    while (!exited) {
        if (!pending && c->rend > c->rpos) { /* a frame already read from the socket */
            if (host_frame(p, &pending, &left) < 0)
                return -1;
            continue;
        }
        struct pollfd fds[5] = {
            {pending ? -1 : c->fd, POLLIN, 0},
            {pending ? p->in : -1, POLLOUT, 0},
            {p->out_open ? p->out : -1, POLLIN, 0},
            {p->err_open ? p->err : -1, POLLIN, 0},
            {p->ch.efd, POLLIN, 0},
        };
        int wait_ms = -1;
        if (deadline > 0 && !p->timed_out) {
            double ms = (deadline - monotonic()) * 1000.0;
            wait_ms = ms <= 0 ? 0 : ms > 1e9 ? 1000000000 : (int)ms + 1;
        }
        if (c->queued && (wait_ms < 0 || wait_ms > 5))
            wait_ms = 5; /* an end of stream held back goes out soon, exit or not */
        int n = poll(fds, 5, wait_ms);
        if (n < 0 && errno != EINTR)
            return -1;
        if (n == 0 && c->queued && frame_flush(c) < 0)
            return -1;
        if (deadline > 0 && !p->timed_out && monotonic() >= deadline) {
            p->timed_out = 1;
            kill(-p->ch.pid, SIGKILL);
            kill(p->ch.pid, SIGKILL);
        }
        if (n <= 0)
            continue;
        if (fds[4].revents)
            exited = 1;
        if (fds[2].revents && pump(p, &p->out, FRAME_STDOUT, &p->out_open, 0) < 0)
            return -1;
        if (fds[3].revents && pump(p, &p->err, FRAME_STDERR, &p->err_open, 0) < 0)
            return -1;
        if (fds[1].revents) {
            ssize_t w = write(p->in, pending, left);
            if (w > 0) {
                pending += w;
                left -= (size_t)w;
            } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
                left = 0; /* the process closed its stdin: the rest is dropped */
            }
            if (left == 0)
                pending = NULL;
        }
        if (fds[0].revents && host_frame(p, &pending, &left) < 0)
            return -1;
    }
    reaper_wait(&p->ch);
    close_fd(&p->slave); /* so that the PTY reads end once drained */
    /* what the process wrote before it ended is in the pipes: send it all */
    if (p->out_open && pump(p, &p->out, FRAME_STDOUT, &p->out_open, 1) < 0)
        return -1;
    if (p->err_open && pump(p, &p->err, FRAME_STDERR, &p->err_open, 1) < 0)
        return -1;
    if ((p->out_open && frame_queue(c, FRAME_STDOUT, "", 0) < 0) ||
        (p->err_open && frame_queue(c, FRAME_STDERR, "", 0) < 0))
        return -1;
    if (result(p) < 0)
        return -1;
    return p->stdin_open ? drain_stream(c) : 0;
}

static void start_failed(struct conn *c, const struct request *r, struct failure f)
{
    const char *what = f.stage == STAGE_CWD ? "cannot change to directory"
                       : f.stage == STAGE_IDS ? "cannot switch user for"
                       : f.stage == STAGE_PTY ? "cannot open the terminal for"
                                              : "cannot execute";
    const char *code = f.stage == STAGE_EXEC && (f.err == ENOENT || f.err == EACCES)
                           ? (f.err == ENOENT ? "not_found" : "permission")
                           : "exec_failed";
    const char *obj = f.stage == STAGE_CWD ? r->cwd : r->argv[0];
    if (f.stage == STAGE_IDS)
        send_error(c, code, "%s '%.200s' (uid %u, gid %u): %s", what, obj, (unsigned)r->uid,
                   (unsigned)r->gid, strerror(f.err));
    else
        send_error(c, code, "%s '%.200s': %s", what, obj, strerror(f.err));
}

int op_exec(struct conn *c, struct jval *req)
{
    struct request r = {0};
    struct running p = {.c = c, .in = -1, .out = -1, .err = -1, .slave = -1, .ch = {.efd = -1}};
    int child_fds[3] = {-1, -1, -1}, errp[2] = {-1, -1}, rc, started = 0, registered = 0;
    int pin[2] = {-1, -1}, pout[2] = {-1, -1}, perr[2] = {-1, -1}, bad = 0;
    int want_stdin = jbool(req, "stdin", 0, &bad);
    char msg[512], slave[128] = "";
    if (parse_request(req, &r, msg, sizeof msg) < 0) {
        rc = send_error(c, "bad_request", "%s", msg);
        goto done;
    }
    p.buf = malloc(OUT_CHUNK);
    int ok = p.buf && pipe2(errp, O_CLOEXEC) == 0 && (p.ch.efd = eventfd(0, EFD_CLOEXEC)) >= 0;
    if (ok && r.pty) {
        p.out = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
        ok = p.out >= 0 && grantpt(p.out) == 0 && unlockpt(p.out) == 0 &&
             ptsname_r(p.out, slave, sizeof slave) == 0 && ioctl(p.out, TIOCSWINSZ, &r.ws) == 0 &&
             (p.slave = open(slave, O_RDWR | O_NOCTTY | O_CLOEXEC)) >= 0;
        p.in = ok ? fcntl(p.out, F_DUPFD_CLOEXEC, 3) : -1;
        ok = ok && p.in >= 0;
    } else if (ok) {
        ok = pipe2(pout, O_CLOEXEC) == 0 && pipe2(perr, O_CLOEXEC) == 0;
        ok = ok && (r.want_stdin ? pipe2(pin, O_CLOEXEC) == 0
                                 : (pin[0] = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0);
        child_fds[0] = pin[0], child_fds[1] = pout[1], child_fds[2] = perr[1];
        p.in = pin[1], p.out = pout[0], p.err = perr[0];
    }
    if (!ok) {
        rc = send_error(c, errno_code(errno), "cannot make the pipes or terminal for '%.200s': %s",
                        r.argv[0], strerror(errno));
        goto done;
    }
    p.pty = r.pty;
    p.stdin_open = r.want_stdin;
    p.out_open = 1;
    p.err_open = !r.pty;
    reaper_lock();
    pid_t pid = start_child(&r, child_fds, slave, errp[1]);
    if (pid > 0) {
        p.ch.pid = pid;
        reaper_add_locked(&p.ch);
        registered = 1;
    }
    reaper_unlock();
    for (int i = 0; i < 3; i++)
        close_fd(&child_fds[i]);
    close_fd(&errp[1]);
    if (pid < 0) {
        rc = send_error(c, "exec_failed", "cannot start '%.200s': fork: %s", r.argv[0],
                        strerror(errno));
        goto done;
    }
    struct failure f;
    ssize_t got;
    while ((got = read(errp[0], &f, sizeof f)) < 0 && errno == EINTR)
        ;
    if (got == (ssize_t)sizeof f) {
        reaper_wait(&p.ch);
        start_failed(c, &r, f);
        rc = c->lost ? -1 : 0;
        goto done;
    }
    started = 1;
    for (int *fd = &p.in; fd <= &p.err; fd++)
        if (*fd >= 0)
            fcntl(*fd, F_SETFL, fcntl(*fd, F_GETFL) | O_NONBLOCK);
    struct jw w;
    jw_init(&w);
    jw_begin(&w);
    jw_kbool(&w, "ok", 1);
    jw_kint(&w, "pid", pid);
    jw_end(&w);
    if (r.started_reply)
        rc = send_json(c, &w) < 0 ? -1 : supervise(&p, r.timeout);
    else
        jw_free(&w), rc = supervise(&p, r.timeout);
    if (rc < 0 && !__atomic_load_n(&p.ch.done, __ATOMIC_ACQUIRE)) { /* the host is gone: nothing it started stays */
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
        reaper_wait(&p.ch);
    }
done:
    if (rc == 0 && !started && want_stdin) /* refused: its stdin is still to come */
        rc = drain_stream(c);
    if (registered)
        reaper_forget(&p.ch);
    for (int *fd = &p.in; fd <= &p.err; fd++)
        close_fd(fd);
    close_fd(&p.slave);
    for (int i = 0; i < 3; i++)
        close_fd(&child_fds[i]);
    close_fd(&errp[0]);
    close_fd(&errp[1]);
    close_fd(&p.ch.efd);
    free(p.buf);
    free_request(&r);
    return rc;
}
