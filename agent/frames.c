/* The wire: length-prefixed frames, the hello handshake, errors, and one
 * connection's loop of operations (docs/agent-protocol.md).
 *
 * A frame is a 5-byte header, the payload's length as a big-endian u32 and
 * its kind as a u8, then the payload. A length over MAX_FRAME loses the
 * framing: the agent answers with an error and closes that connection only.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "agent.h"

#define RBUF_SIZE 65536

static const char *const CAPABILITIES[] = {
    "exec", "pty", "signal", "resize", "timeout", "write", "read", "stat", "list",
    "mkdir", "remove", "chmod", "read_tar", "write_tar", "health", "version", "shutdown",
    "identity",
};

static int fill(struct conn *c, size_t need)
{
    if (c->rend - c->rpos >= need)
        return 0;
    memmove(c->rbuf, c->rbuf + c->rpos, c->rend - c->rpos);
    c->rend -= c->rpos;
    c->rpos = 0;
    while (c->rend < need) {
        ssize_t n = read(c->fd, c->rbuf + c->rend, RBUF_SIZE - c->rend);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        c->rend += (size_t)n;
    }
    return 0;
}

int frame_recv(struct conn *c)
{
    if (c->lost || fill(c, 5) < 0) {
        c->lost = 1; /* the peer is gone: whatever was under way is abandoned */
        return -1;
    }
    const unsigned char *h = c->rbuf + c->rpos;
    uint32_t len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
    c->kind = h[4];
    c->rpos += 5;
    if (len > MAX_FRAME) {
        c->lost = 1;
        send_error(c, "frame_too_large",
                   "a frame of %u bytes is larger than the largest this agent takes (%u bytes); "
                   "the framing is lost, so the agent closes this connection",
                   (unsigned)len, MAX_FRAME);
        return -1;
    }
    size_t have = c->rend - c->rpos;
    if (have > len)
        have = len;
    memcpy(c->payload, c->rbuf + c->rpos, have);
    c->rpos += have;
    while (have < len) {
        ssize_t n = read(c->fd, c->payload + have, len - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            c->lost = 1;
            return -1;
        }
        have += (size_t)n;
    }
    c->payload[len] = '\0';
    c->len = len;
    return 0;
}

static void header(unsigned char h[5], int kind, size_t n)
{
    h[0] = (unsigned char)(n >> 24), h[1] = (unsigned char)(n >> 16);
    h[2] = (unsigned char)(n >> 8), h[3] = (unsigned char)n, h[4] = (unsigned char)kind;
}

int frame_queue(struct conn *c, int kind, const void *p, size_t n)
{
    if (c->queued + 5 + n > sizeof c->queue && frame_flush(c) < 0)
        return -1;
    if (5 + n > sizeof c->queue)
        return frame_send(c, kind, p, n);
    header(c->queue + c->queued, kind, n);
    memcpy(c->queue + c->queued + 5, p, n);
    c->queued += 5 + n;
    return 0;
}

int frame_flush(struct conn *c)
{
    size_t done = 0;
    while (done < c->queued) {
        ssize_t w = send(c->fd, c->queue + done, c->queued - done, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            c->lost = 1;
            c->queued = 0;
            return -1;
        }
        done += (size_t)w;
    }
    c->queued = 0;
    return 0;
}

int frame_send(struct conn *c, int kind, const void *p, size_t n)
{
    unsigned char h[5];
    header(h, kind, n);
    if (c->queued) { /* what was held back goes first, in the same write when it fits */
        if (c->queued + 5 + n <= sizeof c->queue) {
            frame_queue(c, kind, p, n);
            return frame_flush(c);
        }
        if (frame_flush(c) < 0)
            return -1;
    }
    struct iovec iov[2] = {{h, 5}, {(void *)p, n}};
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = 2};
    while (iov[0].iov_len + iov[1].iov_len > 0) {
        ssize_t w = sendmsg(c->fd, &m, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            c->lost = 1;
            return -1;
        }
        for (int i = 0; i < 2; i++) {
            size_t take = (size_t)w < iov[i].iov_len ? (size_t)w : iov[i].iov_len;
            iov[i].iov_base = (char *)iov[i].iov_base + take;
            iov[i].iov_len -= take;
            w -= (ssize_t)take;
        }
        if (iov[0].iov_len == 0) {
            m.msg_iov = iov + 1;
            m.msg_iovlen = 1;
        }
    }
    return 0;
}

int send_json(struct conn *c, struct jw *w)
{
    if (w->failed) {
        jw_free(w);
        return send_error(c, "internal", "out of memory writing a reply");
    }
    int r = frame_send(c, FRAME_CONTROL, w->buf, w->len);
    jw_free(w);
    return r;
}

int send_ok(struct conn *c) { return frame_send(c, FRAME_CONTROL, "{\"ok\":true}", 11); }

int send_error(struct conn *c, const char *code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct jw w;
    jw_init(&w);
    jw_begin(&w);
    jw_kbool(&w, "ok", 0);
    jw_kstr(&w, "error", code);
    jw_kstr(&w, "message", msg);
    jw_end(&w);
    int fd_lost = c->lost;
    c->lost = 0; /* an error may still be sent on a connection whose framing is lost */
    int r = frame_send(c, FRAME_CONTROL, w.buf, w.len);
    c->lost = fd_lost || r < 0;
    jw_free(&w);
    return r;
}

const char *errno_code(int err)
{
    switch (err) {
    case ENOENT: return "not_found";
    case EACCES:
    case EPERM:
    case EROFS: return "permission";
    case EEXIST:
    case ENOTEMPTY: return "exists";
    case ENOTDIR: return "not_a_directory";
    case EISDIR: return "is_a_directory";
    case ENOSPC:
    case EDQUOT: return "no_space";
    case ELOOP: return "symlink";
    default: return "io";
    }
}

int drain_stream(struct conn *c)
{
    for (;;) {
        if (frame_recv(c) < 0)
            return -1;
        if (c->kind == FRAME_DATA && c->len == 0)
            return 0;
        /* data, and controls sent before the host read our reply, are dropped */
    }
}

static void capabilities(struct jw *w)
{
    jw_arr_begin(w, "capabilities");
    for (size_t i = 0; i < sizeof CAPABILITIES / sizeof *CAPABILITIES; i++)
        jw_str(w, CAPABILITIES[i], strlen(CAPABILITIES[i]));
    jw_arr_end(w);
}

static int about(struct conn *c)
{
    struct jw w;
    jw_init(&w);
    jw_begin(&w);
    jw_kbool(&w, "ok", 1);
    jw_kint(&w, "protocol", PROTOCOL_VERSION);
    jw_kstr(&w, "agent", AGENT_VERSION);
    capabilities(&w);
    jw_kint(&w, "max_frame", MAX_FRAME);
    jw_kbool(&w, "pid1", g_cfg.pid1);
    jw_end(&w);
    return send_json(c, &w);
}

static int same_token(const char *given)
{
    size_t a = strlen(g_cfg.token), b = given ? strlen(given) : 0;
    unsigned diff = a != b;
    for (size_t i = 0; i < a; i++)
        diff |= (unsigned char)g_cfg.token[i] ^ (unsigned char)(i < b ? given[i] : 0);
    return diff == 0;
}

/* The first frame: 0 to go on, -1 to close. */
static int hello(struct conn *c)
{
    if (frame_recv(c) < 0)
        return -1;
    if (c->kind != FRAME_CONTROL) {
        send_error(c, "protocol", "the first frame must be a hello control frame, not kind %d",
                   c->kind);
        return -1;
    }
    char err[128];
    struct arena *a = arena_new();
    struct jval *req = a ? json_parse(a, (char *)c->payload, c->len, err, sizeof err) : NULL;
    int bad = 0, result = -1;
    long long proto = 0;
    const char *op = req ? jstr(req, "op", &bad) : NULL;
    if (!req)
        send_error(c, "bad_json", "the hello frame is not JSON: %s", a ? err : "out of memory");
    else if (!op || strcmp(op, "hello") != 0)
        send_error(c, "protocol", "the first frame must be {\"op\": \"hello\", ...}");
    else if (jint(req, "protocol", &proto) != 1)
        send_error(c, "bad_request", "hello needs \"protocol\", an integer");
    else if (proto != PROTOCOL_VERSION)
        send_error(c, "unsupported_protocol",
                   "this agent speaks protocol %d, not %lld (agent %s)", PROTOCOL_VERSION,
                   proto, AGENT_VERSION);
    else if (g_cfg.token[0] && !same_token(jstr(req, "token", &bad)))
        send_error(c, "unauthorized",
                   "%s token: this agent was started with a token (kernel argument "
                   "firec.agent_token=, MMDS or --token-file) and refuses connections without it",
                   jget(req, "token") ? "wrong" : "missing");
    else
        result = about(c);
    arena_free(a);
    return result;
}

static int op_health(struct conn *c)
{
    extern double g_started;
    struct jw w;
    jw_init(&w);
    jw_begin(&w);
    jw_kbool(&w, "ok", 1);
    jw_knum(&w, "uptime", monotonic() - g_started);
    jw_kbool(&w, "pid1", g_cfg.pid1);
    jw_end(&w);
    return send_json(c, &w);
}

static int op_shutdown(struct conn *c)
{
    send_ok(c);
    request_shutdown();
    return -1;
}

struct op {
    const char *name;
    int (*run)(struct conn *, struct jval *);
};

static int op_health_(struct conn *c, struct jval *r) { (void)r; return op_health(c); }
static int op_version_(struct conn *c, struct jval *r) { (void)r; return about(c); }
static int op_shutdown_(struct conn *c, struct jval *r) { (void)r; return op_shutdown(c); }

static const struct op OPS[] = {
    {"exec", op_exec},         {"write", op_write},       {"read", op_read},
    {"stat", op_stat},         {"list", op_list},         {"mkdir", op_mkdir},
    {"remove", op_remove},     {"chmod", op_chmod},       {"read_tar", op_read_tar},
    {"write_tar", op_write_tar}, {"health", op_health_},  {"version", op_version_},
    {"shutdown", op_shutdown_}, {"identity", op_identity},
};

/* One frame between operations: 0 to go on, -1 to close. */
static int one_request(struct conn *c)
{
    if (c->kind == FRAME_DATA)
        return send_error(c, "protocol",
                          "a data frame of %zu bytes outside any operation that takes one", c->len);
    if (c->kind != FRAME_CONTROL)
        return send_error(c, "protocol",
                          "unknown frame kind %d (control is 1, data 2; 3 and 4 are the agent's)",
                          c->kind);
    char err[128];
    struct arena *a = arena_new();
    if (!a)
        return send_error(c, "internal", "out of memory");
    struct jval *req = json_parse(a, (char *)c->payload, c->len, err, sizeof err);
    int bad = 0, r;
    const char *op = req ? jstr(req, "op", &bad) : NULL;
    if (!req)
        r = send_error(c, "bad_json", "the control frame is not JSON: %s", err);
    else if (req->type != J_OBJ)
        r = send_error(c, "bad_request", "a control frame must be a JSON object");
    else if (!op)
        r = send_error(c, "bad_request", "the request has no \"op\" string");
    else {
        r = -2;
        for (size_t i = 0; i < sizeof OPS / sizeof *OPS; i++)
            if (strcmp(OPS[i].name, op) == 0) {
                r = OPS[i].run(c, req);
                break;
            }
        if (r == -2)
            r = send_error(c, "unknown_op",
                           "unknown operation '%.100s'; this agent (%s, protocol %d) knows exec, "
                           "write, read, stat, list, mkdir, remove, chmod, read_tar, write_tar, "
                           "health, version, shutdown and identity",
                           op, AGENT_VERSION, PROTOCOL_VERSION);
    }
    arena_free(a);
    return c->lost ? -1 : r;
}

void serve_connection(int fd)
{
    struct conn c = {.fd = fd};
    c.rbuf = malloc(RBUF_SIZE);
    c.payload = malloc(MAX_FRAME + 1);
    if (c.rbuf && c.payload && hello(&c) == 0)
        while (frame_recv(&c) == 0 && one_request(&c) == 0)
            ;
    free(c.rbuf);
    free(c.payload);
    close(fd);
}
