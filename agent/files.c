/* File operations: write, read, stat, list, mkdir, remove, chmod.
 *
 * Paths are absolute, or relative to the root (--root, else /). With a root
 * set, a path whose lexical form or whose real path (symlinks resolved) is
 * outside it is refused. A write goes to a temporary file beside the target
 * and is renamed over it at the end, so a failed write leaves nothing.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"

#define LIST_FLUSH 65536

static int inside_root(const char *p)
{
    size_t n = g_cfg.root_len;
    return n == 0 || (strncmp(p, g_cfg.root, n) == 0 && (p[n] == '\0' || p[n] == '/'));
}

int resolve_path(const char *path, char *out, int follow, const char **code, char *msg,
                 size_t msglen)
{
    char joined[2 * PATH_MAX];
    if (!path || !*path) {
        *code = "bad_request";
        snprintf(msg, msglen, "\"path\" must be a non-empty string");
        return -1;
    }
    if (strlen(path) >= PATH_MAX) {
        *code = "bad_request";
        snprintf(msg, msglen, "the path is longer than %d bytes", PATH_MAX - 1);
        return -1;
    }
    snprintf(joined, sizeof joined, "%s/%s", path[0] == '/' ? "" : g_cfg.root, path);
    /* lexical normalisation: ".", ".." and repeated slashes */
    size_t n = 0;
    for (char *seg = joined; *seg;) {
        char *end = strchr(seg, '/');
        size_t len = end ? (size_t)(end - seg) : strlen(seg);
        if (len == 0 || (len == 1 && seg[0] == '.')) {
            /* nothing */
        } else if (len == 2 && seg[0] == '.' && seg[1] == '.') {
            while (n > 0 && out[--n] != '/')
                ;
        } else {
            if (n + len + 2 >= PATH_MAX) {
                *code = "bad_request";
                snprintf(msg, msglen, "the path is longer than %d bytes", PATH_MAX - 1);
                return -1;
            }
            out[n++] = '/';
            memcpy(out + n, seg, len);
            n += len;
        }
        if (!end)
            break;
        seg = end + 1;
    }
    if (n == 0)
        out[n++] = '/';
    out[n] = '\0';
    char real[PATH_MAX], parent[PATH_MAX];
    int outside = !inside_root(out);
    if (!outside && g_cfg.root_len) {
        if (follow && realpath(out, real)) {
            outside = !inside_root(real);
        } else {
            snprintf(parent, sizeof parent, "%s", out);
            char *slash = strrchr(parent, '/');
            if (slash == parent)
                slash[1] = '\0';
            else
                *slash = '\0';
            if (realpath(parent, real))
                outside = !inside_root(real);
        }
    }
    if (outside) {
        *code = "outside_root";
        snprintf(msg, msglen, "'%.300s' is outside the agent's root %.300s", path, g_cfg.root);
        return -1;
    }
    return 0;
}

/* The path of a request, resolved; -1 after an error reply (or a lost connection: c->lost). */
static int req_path(struct conn *c, struct jval *req, char *out, int follow, int stream)
{
    int bad = 0;
    const char *code, *path = jstr(req, "path", &bad);
    char msg[768];
    if (bad) {
        code = "bad_request";
        snprintf(msg, sizeof msg, "\"path\" must be a string without NUL bytes");
    } else if (resolve_path(path, out, follow, &code, msg, sizeof msg) == 0) {
        return 0;
    }
    if (stream && drain_stream(c) < 0)
        return -1;
    send_error(c, code, "%s", msg);
    return -1;
}

static int req_mode(struct jval *req, long long dflt)
{
    long long mode = dflt;
    if (jint(req, "mode", &mode) < 0 || mode < 0 || mode > 07777)
        return -1;
    return (int)mode;
}

static int fail_errno(struct conn *c, const char *what, const char *path)
{
    int err = errno;
    return send_error(c, errno_code(err), "cannot %s '%.300s': %s", what, path, strerror(err));
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int mkdir_parents(const char *path, mode_t mode)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(buf, mode) < 0 && errno != EEXIST)
                return -1;
            *p = saved;
            if (saved == '\0')
                break;
        }
    }
    struct stat st;
    if (stat(path, &st) < 0)
        return -1;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

static void parent_of(const char *path, char *out)
{
    snprintf(out, PATH_MAX, "%s", path);
    char *slash = strrchr(out, '/');
    if (slash == out)
        slash[1] = '\0';
    else
        *slash = '\0';
}

int op_write(struct conn *c, struct jval *req)
{
    char path[PATH_MAX], tmp[PATH_MAX + 32], dir[PATH_MAX];
    int bad = 0, err = 0, fd = -1;
    const char *what = "write";
    if (req_path(c, req, path, 1, 1) < 0)
        return c->lost ? -1 : 0;
    int append = jbool(req, "append", 0, &bad), parents = jbool(req, "parents", 0, &bad);
    int mode = req_mode(req, 0644);
    if (bad || mode < 0) {
        if (drain_stream(c) < 0)
            return -1;
        return send_error(c, "bad_request", "write takes \"path\", \"mode\" (0 to 0o7777), "
                          "\"append\" and \"parents\" (booleans)");
    }
    parent_of(path, dir);
    struct stat st;
    if (parents && mkdir_parents(dir, 0755) < 0) {
        err = errno, what = "make the parent directories of";
    } else if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        err = EISDIR;
    } else if (append) {
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, mode);
    } else {
        const char *base = strrchr(path, '/') + 1;
        for (int i = 0; i < 100 && fd < 0; i++) {
            if ((size_t)snprintf(tmp, sizeof tmp, "%s/.%.64s.firec-%08lx",
                                 strcmp(dir, "/") ? dir : "", base,
                                 (unsigned long)random()) >= sizeof tmp) {
                errno = ENAMETOOLONG;
                break;
            }
            fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
            if (fd < 0 && errno != EEXIST)
                break;
        }
    }
    if (!err && fd < 0)
        err = errno;
    long long size = 0;
    for (;;) {
        if (frame_recv(c) < 0)
            break;
        if (c->kind == FRAME_DATA && c->len == 0)
            break;
        if (c->kind != FRAME_DATA) {
            c->lost = 1;
            send_error(c, "protocol", "a control frame in the middle of a write's data: the "
                       "write is abandoned and the connection closed");
            break;
        }
        if (!err && write_all(fd, c->payload, c->len) < 0)
            err = errno;
        size += (long long)c->len;
    }
    if (fd >= 0 && !err && !c->lost && !append && fchmod(fd, (mode_t)mode) < 0)
        err = errno;
    if (fd >= 0 && close(fd) < 0 && !err)
        err = errno;
    if (fd >= 0 && !append && (err || c->lost || rename(tmp, path) < 0)) {
        if (!err && !c->lost)
            err = errno;
        unlink(tmp);
    }
    if (c->lost)
        return -1;
    if (err) {
        errno = err;
        return fail_errno(c, what, path);
    }
    struct jw w;
    jw_init(&w);
    jw_begin(&w);
    jw_kbool(&w, "ok", 1);
    jw_kint(&w, "size", size);
    jw_end(&w);
    return send_json(c, &w);
}

int op_read(struct conn *c, struct jval *req)
{
    char path[PATH_MAX];
    long long offset = 0, length = -1;
    if (req_path(c, req, path, 1, 0) < 0)
        return c->lost ? -1 : 0;
    if (jint(req, "offset", &offset) < 0 || jint(req, "length", &length) < 0 || offset < 0 ||
        length < -1)
        return send_error(c, "bad_request", "\"offset\" and \"length\" must be integers >= 0");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        int r = fail_errno(c, "read", path);
        if (fd >= 0)
            close(fd);
        return r;
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return send_error(c, "is_a_directory",
                          "cannot read '%.300s': it is a directory (read_tar sends directories)",
                          path);
    }
    if (offset && lseek(fd, offset, SEEK_SET) < 0) {
        int r = fail_errno(c, "seek in", path);
        close(fd);
        return r;
    }
    struct jw w;
    jw_init(&w);
    jw_begin(&w);
    jw_kbool(&w, "ok", 1);
    jw_kint(&w, "size", S_ISREG(st.st_mode) ? (long long)st.st_size : -1);
    jw_kint(&w, "mode", st.st_mode & 07777);
    jw_end(&w);
    unsigned char *buf = malloc(MAX_FRAME);
    int r = send_json(c, &w);
    if (!buf && r == 0)
        r = send_error(c, "internal", "out of memory");
    while (buf && r == 0) {
        size_t want = MAX_FRAME;
        if (length >= 0 && (unsigned long long)length < want)
            want = (size_t)length;
        ssize_t n = want ? read(fd, buf, want) : 0;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = fail_errno(c, "read", path); /* a control frame ends the stream: an error */
            break;
        }
        r = frame_send(c, FRAME_DATA, buf, (size_t)n);
        if (n == 0)
            break;
        if (length >= 0)
            length -= n;
    }
    free(buf);
    close(fd);
    return r;
}

static const char *type_name(mode_t m)
{
    return S_ISREG(m) ? "file" : S_ISDIR(m) ? "directory" : S_ISLNK(m) ? "symlink"
         : S_ISCHR(m) ? "char_device" : S_ISBLK(m) ? "block_device" : S_ISFIFO(m) ? "fifo"
         : "socket";
}

void stat_json(struct jw *w, const char *name, const struct stat *st, const char *target)
{
    jw_kstr(w, "name", name);
    jw_kstr(w, "type", type_name(st->st_mode));
    jw_kint(w, "size", (long long)st->st_size);
    jw_kint(w, "mode", st->st_mode & 07777);
    jw_kint(w, "uid", st->st_uid);
    jw_kint(w, "gid", st->st_gid);
    jw_knum(w, "mtime", (double)st->st_mtim.tv_sec + st->st_mtim.tv_nsec / 1e9);
    if (target)
        jw_kstr(w, "target", target);
}

static const char *link_target(int dirfd, const char *name, const struct stat *st, char *buf)
{
    if (!S_ISLNK(st->st_mode))
        return NULL;
    ssize_t n = readlinkat(dirfd, name, buf, PATH_MAX - 1);
    buf[n < 0 ? 0 : n] = '\0';
    return buf;
}

int op_stat(struct conn *c, struct jval *req)
{
    char path[PATH_MAX], target[PATH_MAX];
    int bad = 0;
    int follow = jbool(req, "follow", 1, &bad);
    if (req_path(c, req, path, follow, 0) < 0)
        return c->lost ? -1 : 0;
    struct stat st;
    if ((follow ? stat(path, &st) : lstat(path, &st)) < 0)
        return fail_errno(c, "stat", path);
    struct jw w;
    jw_init(&w);
    jw_begin(&w);
    jw_kbool(&w, "ok", 1);
    jw_kstr(&w, "path", path);
    stat_json(&w, strcmp(path, "/") ? strrchr(path, '/') + 1 : "/", &st,
              link_target(AT_FDCWD, path, &st, target));
    jw_end(&w);
    return send_json(c, &w);
}

int op_list(struct conn *c, struct jval *req)
{
    char path[PATH_MAX], target[PATH_MAX];
    if (req_path(c, req, path, 1, 0) < 0)
        return c->lost ? -1 : 0;
    DIR *d = opendir(path);
    if (!d)
        return fail_errno(c, "list", path);
    int r = send_ok(c);
    struct jw w;
    jw_init(&w);
    struct dirent *e;
    while (r == 0) {
        errno = 0;
        if (!(e = readdir(d))) {
            if (errno) {
                jw_free(&w);
                r = fail_errno(c, "list", path);
            }
            break;
        }
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue; /* gone meanwhile */
        w.depth = 0;
        jw_begin(&w);
        stat_json(&w, e->d_name, &st, link_target(dirfd(d), e->d_name, &st, target));
        jw_end(&w);
        jw_raw(&w, "\n");
        if (w.failed) {
            jw_free(&w);
            r = send_error(c, "internal", "out of memory listing '%.300s'", path);
            break;
        }
        if (w.len >= LIST_FLUSH) {
            r = frame_send(c, FRAME_DATA, w.buf, w.len);
            w.len = 0;
        }
    }
    if (r == 0 && e == NULL && !w.failed && (w.len == 0 || frame_send(c, FRAME_DATA, w.buf, w.len) == 0))
        r = frame_send(c, FRAME_DATA, "", 0);
    jw_free(&w);
    closedir(d);
    return r;
}

int op_mkdir(struct conn *c, struct jval *req)
{
    char path[PATH_MAX];
    int bad = 0;
    if (req_path(c, req, path, 1, 0) < 0)
        return c->lost ? -1 : 0;
    int parents = jbool(req, "parents", 0, &bad), mode = req_mode(req, 0755);
    if (bad || mode < 0)
        return send_error(c, "bad_request", "mkdir takes \"path\", \"mode\" and \"parents\"");
    if ((parents ? mkdir_parents(path, (mode_t)mode) : mkdir(path, (mode_t)mode)) < 0)
        return fail_errno(c, "make directory", path);
    return send_ok(c);
}

int remove_tree(int dirfd, const char *name)
{
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return unlinkat(dirfd, name, 0);
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -1;
    }
    struct dirent *e;
    int r = 0;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        int isdir = e->d_type == DT_DIR;
        struct stat st;
        if (e->d_type == DT_UNKNOWN)
            isdir = fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
        if ((isdir ? remove_tree(fd, e->d_name) : unlinkat(fd, e->d_name, 0)) < 0)
            r = -1;
    }
    closedir(d);
    if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0)
        r = -1;
    return r;
}

int op_remove(struct conn *c, struct jval *req)
{
    char path[PATH_MAX];
    int bad = 0;
    if (req_path(c, req, path, 0, 0) < 0)
        return c->lost ? -1 : 0;
    int recursive = jbool(req, "recursive", 0, &bad);
    if (bad)
        return send_error(c, "bad_request", "remove takes \"path\" and \"recursive\"");
    if (strcmp(path, "/") == 0 || (g_cfg.root_len && strcmp(path, g_cfg.root) == 0))
        return send_error(c, "permission", "refusing to remove the root '%s'", path);
    struct stat st;
    if (lstat(path, &st) < 0)
        return fail_errno(c, "remove", path);
    int r = !S_ISDIR(st.st_mode) ? unlink(path)
            : recursive          ? remove_tree(AT_FDCWD, path)
                                 : rmdir(path);
    if (r < 0)
        return fail_errno(c, "remove", path);
    return send_ok(c);
}

int op_chmod(struct conn *c, struct jval *req)
{
    char path[PATH_MAX];
    if (req_path(c, req, path, 1, 0) < 0)
        return c->lost ? -1 : 0;
    int mode = req_mode(req, -1);
    if (mode < 0)
        return send_error(c, "bad_request", "chmod needs \"mode\", an integer from 0 to 0o7777");
    if (chmod(path, (mode_t)mode) < 0)
        return fail_errno(c, "chmod", path);
    return send_ok(c);
}
