/* firec-agent: the program inside a firec microVM that runs commands and moves
 * files for the host. Arguments, configuration, listening, and a thread per
 * connection.
 *
 *   firec-agent [--init | --service] [--listen vsock:PORT | unix:PATH | unix:@NAME] [--port N]
 *               [--token-file FILE] [--root DIR] [--cmdline FILE] [--grace SECONDS]
 *
 * As PID 1 (or with --init) it first does the work of init (init.c). It
 * listens on AF_VSOCK (never on the guest's network), or on a Unix socket
 * for tests and for firec's emulator.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
#define VMADDR_CID_ANY_ 0xFFFFFFFFu

struct sockaddr_vm_ { /* <linux/vm_sockets.h>, which musl's headers lack */
    unsigned short svm_family;
    unsigned short svm_reserved1;
    unsigned int svm_port;
    unsigned int svm_cid;
    unsigned char svm_zero[4];
};

struct config g_cfg;
double g_started;
static int g_connections;

static const char USAGE[] =
    "usage: firec-agent [options]\n"
    "\n"
    "The guest side of firec: runs commands and moves files for the host.\n"
    "\n"
    "  --init              do the work of PID 1 (the default when it is PID 1)\n"
    "  --service           never do the work of PID 1\n"
    "  --listen ADDR       vsock:PORT, unix:PATH or unix:@NAME (abstract; default: vsock on --port)\n"
    "  --port N            the vsock port (default: kernel argument firec.agent_port=, else %u)\n"
    "  --token-file FILE   refuse connections without this token (default: kernel\n"
    "                      argument firec.agent_token=)\n"
    "  --root DIR          confine file operations to DIR\n"
    "  --cmdline FILE      read kernel arguments from FILE (default /proc/cmdline)\n"
    "  --grace SECONDS     between SIGTERM and SIGKILL at shutdown (default 2)\n"
    "  --version           print the agent and protocol versions\n";

void logmsg(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof buf - 2)
        n = sizeof buf - 2;
    buf[n++] = '\n';
    char line[1100];
    int m = snprintf(line, sizeof line, "firec-agent: %.*s", n, buf);
    (void)!write(2, line, (size_t)m);
}

double monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *fmt, const char *arg) __attribute__((noreturn));
static void die(const char *fmt, const char *arg)
{
    logmsg(fmt, arg, strerror(errno));
    if (getpid() == 1) { /* init must not exit (the kernel would panic): serve signals only */
        logmsg("not listening: the guest can only be shut down");
        reaper_start();
        for (;;)
            pause();
    }
    _exit(2);
}

static int read_token(const char *file)
{
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, g_cfg.token, sizeof g_cfg.token - 1);
    close(fd);
    if (n < 0)
        return -1;
    g_cfg.token[n] = '\0';
    while (n > 0 && strchr(" \t\r\n", g_cfg.token[n - 1]))
        g_cfg.token[--n] = '\0';
    return 0;
}

static int listen_on(const char *addr)
{
    int s;
    if (strncmp(addr, "unix:", 5) == 0) {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        const char *path = addr + 5;
        if (!*path || strlen(path) >= sizeof sun.sun_path) {
            errno = ENAMETOOLONG;
            return -1;
        }
        strcpy(sun.sun_path, path);
        socklen_t len = sizeof sun;
        if (path[0] == '@') { /* Linux's abstract namespace: no file, gone with the agent */
            sun.sun_path[0] = '\0';
            len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
        } else {
            struct stat st;
            if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
                unlink(path); /* a stale socket of an earlier run */
        }
        if ((s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
            bind(s, (struct sockaddr *)&sun, len) < 0)
            return -1;
        if (path[0] != '@')
            snprintf(g_cfg.unix_path, sizeof g_cfg.unix_path, "%s", path);
    } else if (strncmp(addr, "vsock:", 6) == 0) {
        char *end;
        unsigned long port = strtoul(addr + 6, &end, 10);
        struct sockaddr_vm_ svm = {.svm_family = AF_VSOCK, .svm_port = (unsigned)port,
                                   .svm_cid = VMADDR_CID_ANY_};
        if (!addr[6] || *end || port > 0xFFFFFFFEul) {
            errno = EINVAL;
            return -1;
        }
        if ((s = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
            bind(s, (struct sockaddr *)&svm, sizeof svm) < 0)
            return -1;
    } else {
        errno = EINVAL;
        return -1;
    }
    return listen(s, 256) < 0 ? -1 : s;
}

/* 0, 1 and 2 open (on `dev` if they were closed), so no socket becomes a child's stdin. */
static void std_fds(const char *dev)
{
    int fd;
    while ((fd = open(dev, O_RDWR | O_NOCTTY)) >= 0 && fd <= 2)
        ;
    if (fd > 2)
        close(fd);
    while ((fd = open("/dev/null", O_RDWR)) >= 0 && fd <= 2)
        ;
    if (fd > 2)
        close(fd);
}

static void *connection_thread(void *arg)
{
    serve_connection((int)(long)arg);
    __atomic_sub_fetch(&g_connections, 1, __ATOMIC_RELAXED);
    return NULL;
}

static void refuse(int fd)
{
    struct conn c = {.fd = fd};
    send_error(&c, "busy", "this agent already serves %d connections; close some first",
               MAX_CONNECTIONS);
    close(fd);
}

/* As the kernel's init, the words of its command line it does not know come as our
 * arguments, and exiting would panic the kernel: they are only logged then. */
static void unknown(const char *arg)
{
    if (getpid() == 1) {
        logmsg("ignoring the argument %s", arg);
        return;
    }
    fprintf(stderr, "firec-agent: unknown option %s\n\n", arg);
    fprintf(stderr, USAGE, DEFAULT_VSOCK_PORT);
    exit(2);
}

static void parse_args(int argc, char **argv, char *port, char *token_file, char *cmdline,
                       int *force)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char word[64];
        int takes = 1;
        snprintf(word, sizeof word, " %s ", a);
        if (strcmp(a, "--init") == 0) {
            *force = 1, takes = 0;
        } else if (strcmp(a, "--service") == 0) {
            *force = -1, takes = 0;
        } else if (strcmp(a, "--version") == 0) {
            printf("firec-agent %s (protocol %d)\n", AGENT_VERSION, PROTOCOL_VERSION);
            exit(0);
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            printf(USAGE, DEFAULT_VSOCK_PORT);
            exit(0);
        } else if (!v && strstr(" --listen --port --token-file --root --cmdline --grace ", word) &&
                   getpid() != 1) {
            fprintf(stderr, "firec-agent: %s needs a value\n\n", a);
            fprintf(stderr, USAGE, DEFAULT_VSOCK_PORT);
            exit(2);
        } else if (!v || strncmp(a, "--", 2) != 0) {
            unknown(a);
            takes = 0;
        } else if (strcmp(a, "--listen") == 0) {
            snprintf(g_cfg.listen, sizeof g_cfg.listen, "%s", v);
        } else if (strcmp(a, "--port") == 0) {
            snprintf(port, 32, "%s", v);
        } else if (strcmp(a, "--token-file") == 0) {
            snprintf(token_file, 4096, "%s", v);
        } else if (strcmp(a, "--root") == 0) {
            if (!realpath(v, g_cfg.root))
                die("--root %s: %s", v);
            g_cfg.root_len = strcmp(g_cfg.root, "/") ? strlen(g_cfg.root) : 0;
        } else if (strcmp(a, "--cmdline") == 0) {
            snprintf(cmdline, 4096, "%s", v);
        } else if (strcmp(a, "--grace") == 0) {
            g_cfg.grace = strtod(v, NULL);
        } else {
            unknown(a);
            takes = 0;
        }
        i += takes;
    }
}

int main(int argc, char **argv)
{
    char port[32] = "", token_file[4096] = "", cmdline[4096] = "/proc/cmdline", arg[256];
    int force = 0;
    g_started = monotonic();
    g_cfg.grace = 2.0;
    std_fds("/dev/null");
    umask(022);
    srandom((unsigned)(time(NULL) ^ getpid() ^ (long)&port));
    parse_args(argc, argv, port, token_file, cmdline, &force);
    g_cfg.pid1 = force ? force > 0 : getpid() == 1;
    reaper_block(); /* the reaper thread starts once listening: signals wait until then */
    if (g_cfg.pid1) {
        init_system();
        std_fds("/dev/console");
    }
    read_cmdline(cmdline);
    if (token_file[0] && read_token(token_file) < 0)
        die("--token-file %s: %s", token_file);
    if (!token_file[0])
        cmdline_arg("firec.agent_token", g_cfg.token, sizeof g_cfg.token);
    if (g_cfg.pid1)
        init_network(); /* and the token from MMDS, when none was given */
    if (!port[0] && !cmdline_arg("firec.agent_port", port, sizeof port))
        snprintf(port, sizeof port, "%u", DEFAULT_VSOCK_PORT);
    if (!g_cfg.listen[0])
        snprintf(g_cfg.listen, sizeof g_cfg.listen, "vsock:%s", port);
    int ls = listen_on(g_cfg.listen);
    if (ls < 0) {
        logmsg("cannot listen on %s: %s", g_cfg.listen, strerror(errno));
        if (!g_cfg.pid1)
            return 2;
        reaper_start();
        for (;;) /* init must not exit: serve signals (and shutdown) only */
            pause();
    }
    snprintf(arg, sizeof arg, "%s", g_cfg.listen);
    reaper_start();
    logmsg("listening on %s (agent %s, protocol %d%s%s)", arg, AGENT_VERSION, PROTOCOL_VERSION,
           g_cfg.pid1 ? ", as init" : "", g_cfg.token[0] ? ", token required" : "");
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    /* tar_out.c recurses once per directory level: up to PATH_MAX / 2 levels of a
     * few hundred bytes each. Untouched stack costs no memory. */
    pthread_attr_setstacksize(&attr, 2 * 1024 * 1024);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (;;) {
        int fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EINTR && errno != ECONNABORTED)
                logmsg("accept: %s", strerror(errno));
            if (errno == EMFILE || errno == ENFILE || errno == ENOMEM)
                sleep(1);
            continue;
        }
        if (__atomic_add_fetch(&g_connections, 1, __ATOMIC_RELAXED) > MAX_CONNECTIONS) {
            __atomic_sub_fetch(&g_connections, 1, __ATOMIC_RELAXED);
            refuse(fd);
            continue;
        }
        pthread_t t;
        if (pthread_create(&t, &attr, connection_thread, (void *)(long)fd) != 0) {
            __atomic_sub_fetch(&g_connections, 1, __ATOMIC_RELAXED);
            refuse(fd);
        }
    }
}
