/* firec-agent: the guest side of firec. Declarations shared by its files.
 *
 * main.c    arguments, configuration, listening, one thread per connection
 * init.c    the work of PID 1: mounts, hostname, network, shutdown; mmds.c reads MMDS
 * reaper.c  the one waitpid(-1) of the process, and signals
 * frames.c  the wire: length-prefixed frames, hello, errors, dispatch
 * json.c    a small JSON reader; jsonw.c its writer
 * exec.c    exec: processes, pipes, PTYs; exec_request.c reads the request
 * files.c   file operations, paths confined to --root
 * tar_out.c a directory sent as a tar stream; tar_in.c one extracted
 * identity.c a restored guest's own clock, random seed, hostname and MACs
 *
 * The protocol is described in docs/agent-protocol.md.
 */
#ifndef FIREC_AGENT_H
#define FIREC_AGENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#define AGENT_VERSION "0.1.0"
#define PROTOCOL_VERSION 1
#define DEFAULT_VSOCK_PORT 61932u /* 0xF1EC */
#define MAX_FRAME (1u << 20)      /* largest payload of one frame */
#define MAX_CONNECTIONS 1024

enum frame_kind {
    FRAME_CONTROL = 1, /* a JSON object */
    FRAME_DATA = 2,    /* stdin, file or tar bytes; empty: end of stream */
    FRAME_STDOUT = 3,  /* a process's stdout (and its PTY's output) */
    FRAME_STDERR = 4,  /* a process's stderr */
};

struct config {
    int pid1;              /* doing the work of init */
    char listen[256];      /* "vsock:PORT" or "unix:/path" */
    char unix_path[108];   /* the socket file to remove at exit, if any */
    char token[256];       /* "" = no token asked */
    char root[4096];       /* "" = file operations anywhere */
    size_t root_len;
    char cmdline[4096];    /* the kernel command line (or --cmdline FILE) */
    double grace;          /* seconds between SIGTERM and SIGKILL at shutdown */
};

extern struct config g_cfg;

/* ---- json.c, jsonw.c ---- */
enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct jval {
    enum jtype type;
    int boolean;
    double num;
    char *str; /* J_STR: decoded bytes, NUL-terminated (may hold NULs: see len) */
    size_t len;
    char *key; /* the member's name, inside an object */
    struct jval *child, *next;
};

struct arena;
struct arena *arena_new(void);
void arena_free(struct arena *a);
/* Parse text[0..n) into a tree in `a`; NULL on error with a message in err. */
struct jval *json_parse(struct arena *a, const char *text, size_t n, char *err, size_t errlen);
struct jval *jget(const struct jval *obj, const char *key);
/* A string member (NULL when absent); *bad set when present but not a string. */
const char *jstr(const struct jval *obj, const char *key, int *bad);
int jint(const struct jval *obj, const char *key, long long *out); /* 0 absent, 1 ok, -1 bad */
int jbool(const struct jval *obj, const char *key, int dflt, int *bad);

struct jw {
    char *buf;
    size_t len, cap;
    int first[32];
    int depth;
    int failed;
};
void jw_init(struct jw *w);
void jw_free(struct jw *w);
void jw_begin(struct jw *w); /* { */
void jw_end(struct jw *w);   /* } */
void jw_key(struct jw *w, const char *key);
void jw_str(struct jw *w, const char *s, size_t n);
void jw_kstr(struct jw *w, const char *key, const char *s);
void jw_kint(struct jw *w, const char *key, long long v);
void jw_knum(struct jw *w, const char *key, double v);
void jw_kbool(struct jw *w, const char *key, int v);
void jw_knull(struct jw *w, const char *key);
void jw_arr_begin(struct jw *w, const char *key);
void jw_arr_end(struct jw *w);
void jw_raw(struct jw *w, const char *s);
void jw_int(struct jw *w, long long v);

/* ---- frames.c ---- */
struct conn {
    int fd;
    unsigned char *rbuf; /* read buffer */
    size_t rpos, rend;
    unsigned char *payload; /* the last frame's payload (MAX_FRAME + 1) */
    size_t len;
    int kind;
    int lost;            /* framing lost: the connection must end */
    unsigned char queue[256]; /* small frames held back, sent with the next (frame_queue) */
    size_t queued;
};

/* 0: a frame in c->kind/payload/len; -1: the peer closed or failed (or framing lost). */
int frame_recv(struct conn *c);
int frame_send(struct conn *c, int kind, const void *p, size_t n);
/* Hold a small frame back, to go out in one write with what follows (frame_flush,
 * or the next frame_send): a process's last frames and its result, say. */
int frame_queue(struct conn *c, int kind, const void *p, size_t n);
int frame_flush(struct conn *c);
int send_json(struct conn *c, struct jw *w);
int send_ok(struct conn *c);
/* {"ok":false,"error":code,"message":...}; returns 0 when sent, -1 when the peer is gone. */
int send_error(struct conn *c, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The error code for an errno value ("not_found", "permission", ...). */
const char *errno_code(int err);
/* Read and discard data frames up to the empty one; -1 when the connection is lost. */
int drain_stream(struct conn *c);
void serve_connection(int fd);

/* ---- exec.c ---- */
int op_exec(struct conn *c, struct jval *req);

/* ---- files.c ---- */
/* Resolve `path` (absolute, or relative to the root) into out[4096], refused outside
 * the root (symlinks included; the last one only when `follow`). Returns 0, or -1
 * after setting *code and msg. */
int resolve_path(const char *path, char *out, int follow, const char **code, char *msg,
                 size_t msglen);
int op_write(struct conn *c, struct jval *req);
int op_read(struct conn *c, struct jval *req);
int op_stat(struct conn *c, struct jval *req);
int op_list(struct conn *c, struct jval *req);
int op_mkdir(struct conn *c, struct jval *req);
int op_remove(struct conn *c, struct jval *req);
int op_chmod(struct conn *c, struct jval *req);
int remove_tree(int dirfd, const char *name);
int mkdir_parents(const char *path, mode_t mode);
void stat_json(struct jw *w, const char *name, const struct stat *st, const char *target);

/* ---- tar_out.c, tar_in.c ---- */
int op_read_tar(struct conn *c, struct jval *req);
int op_write_tar(struct conn *c, struct jval *req);

/* ---- identity.c ---- */
int op_identity(struct conn *c, struct jval *req);

/* ---- reaper.c ---- */
struct child {
    pid_t pid;
    int efd;    /* eventfd written when the child has been reaped */
    int status; /* its wait status, once reaped */
    int done;
    struct child *next;
};
void reaper_block(void); /* block the signals the reaper takes (before any thread or child) */
void reaper_start(void); /* start the signal thread (blocking them first, if not yet) */
void reaper_lock(void);
void reaper_unlock(void);
void reaper_add_locked(struct child *ch); /* call between fork() and reaper_unlock() */
void reaper_forget(struct child *ch);
int reaper_wait(struct child *ch); /* block until reaped; returns the wait status */
void request_shutdown(void);

/* ---- init.c ---- */
void init_system(void);  /* mounts: PID 1 only */
void init_network(void); /* hostname, lo, eth0: PID 1 only */
void shutdown_system(void) __attribute__((noreturn));
void read_cmdline(const char *file);
struct in_addr;
/* Add the default route via gw on dev (one already there is fine): 0, or -1 with errno. */
int add_default_route(int s, const char *dev, struct in_addr gw);
/* The value of kernel argument `key=` (copied into out), or NULL. */
const char *cmdline_arg(const char *key, char *out, size_t outlen);

/* ---- mmds.c ---- */
/* The MMDS document (firec.mmds=1, or =ADDRESS[:PORT]) in `a`, or NULL. */
struct jval *mmds_document(struct arena *a, const char *arg);
const char *mmds_string(const struct jval *doc, const char *const *keys);

/* ---- main.c ---- */
void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
double monotonic(void);

#endif
