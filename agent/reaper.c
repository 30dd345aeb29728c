/* The one reaper of the process, and its signals.
 *
 * Every thread blocks the signals below; one thread takes them with
 * sigwaitinfo(). On SIGCHLD it calls waitpid(-1) until nothing is left and
 * hands each status to the exec that started that pid (its eventfd), so
 * reaping orphans as PID 1 never steals a status an exec waits for. A pid
 * is registered under the lock taken before fork(), so its status cannot be
 * reaped before its owner is known.
 *
 * SIGTERM and SIGINT (the kernel's Ctrl+Alt+Del, once PID 1 turned the
 * hard reset off) end the agent: children get SIGTERM, then SIGKILL after
 * the grace time; PID 1 then syncs and reboots the guest (init.c). SIGHUP,
 * SIGQUIT, SIGUSR1 and SIGUSR2 are forwarded: as PID 1 to every process, as
 * a service to the process groups of its own children.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static struct child *children;
static sigset_t handled;

void reaper_lock(void) { pthread_mutex_lock(&table_lock); }
void reaper_unlock(void) { pthread_mutex_unlock(&table_lock); }

void reaper_add_locked(struct child *ch)
{
    ch->done = 0;
    ch->next = children;
    children = ch;
}

void reaper_forget(struct child *ch)
{
    reaper_lock();
    for (struct child **p = &children; *p; p = &(*p)->next)
        if (*p == ch) {
            *p = ch->next;
            break;
        }
    reaper_unlock();
}

int reaper_wait(struct child *ch)
{
    uint64_t n;
    while (read(ch->efd, &n, sizeof n) < 0 && errno == EINTR)
        ;
    return ch->status;
}

/* Reap every exited child; 1 when no child is left at all. */
static int reap_all(void)
{
    for (;;) {
        int st;
        pid_t pid = waitpid(-1, &st, WNOHANG | __WALL);
        if (pid == 0)
            return 0;
        if (pid < 0)
            return errno == ECHILD;
        reaper_lock();
        for (struct child *ch = children; ch; ch = ch->next)
            if (ch->pid == pid && !ch->done) {
                uint64_t one = 1;
                ch->status = st;
                __atomic_store_n(&ch->done, 1, __ATOMIC_RELEASE);
                (void)!write(ch->efd, &one, sizeof one);
                break;
            }
        reaper_unlock();
    }
}

static void signal_children(int sig)
{
    if (g_cfg.pid1) {
        kill(-1, sig); /* every process but init itself */
        return;
    }
    reaper_lock();
    for (struct child *ch = children; ch; ch = ch->next)
        if (!ch->done && kill(-ch->pid, sig) < 0)
            kill(ch->pid, sig);
    reaper_unlock();
}

/* Wait until no child is left, reaping, for at most `seconds`; 1 if none is left. */
static int wait_children(double seconds)
{
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    double deadline = monotonic() + seconds;
    while (!reap_all()) {
        double left = deadline - monotonic();
        if (left <= 0)
            return 0;
        if (left > 0.05)
            left = 0.05;
        struct timespec ts = {0, (long)(left * 1e9)};
        sigtimedwait(&chld, NULL, &ts);
    }
    return 1;
}

static void end_all(int sig) __attribute__((noreturn));
static void end_all(int sig)
{
    logmsg("signal %d: ending every process (SIGTERM, then SIGKILL after %gs)", sig, g_cfg.grace);
    signal_children(SIGTERM);
    if (!wait_children(g_cfg.grace)) {
        signal_children(SIGKILL);
        wait_children(2.0);
    }
    if (g_cfg.unix_path[0])
        unlink(g_cfg.unix_path);
    if (g_cfg.pid1)
        shutdown_system();
    _exit(0);
}

static void *signal_thread(void *arg)
{
    (void)arg;
    for (;;) {
        siginfo_t si;
        int sig = sigwaitinfo(&handled, &si);
        if (sig < 0)
            continue;
        switch (sig) {
        case SIGCHLD: reap_all(); break;
        case SIGTERM:
        case SIGINT: end_all(sig);
        default: signal_children(sig); break;
        }
    }
    return NULL;
}

void request_shutdown(void) { kill(getpid(), SIGTERM); }

void reaper_block(void)
{
    static const int sigs[] = {SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
    sigemptyset(&handled);
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++)
        sigaddset(&handled, sigs[i]);
    pthread_sigmask(SIG_BLOCK, &handled, NULL); /* inherited by every thread made after */
    signal(SIGPIPE, SIG_IGN);
}

void reaper_start(void)
{
    static int started;
    if (started++)
        return;
    reaper_block();
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, signal_thread, NULL) != 0) {
        logmsg("cannot start the reaper thread");
        _exit(1);
    }
    pthread_attr_destroy(&attr);
}
