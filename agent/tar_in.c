/* write_tar: a tar stream from the host, extracted into a directory.
 *
 * See tar_out.c for the format. Extraction cannot leave its directory: a
 * name with ".." is refused, and every parent is opened with O_NOFOLLOW from
 * the directory's own fd, so a symlink in the archive (or already there) is
 * never followed. Into a directory that does not exist yet, the archive is
 * extracted beside it and renamed at the end; into one that exists, what it
 * made at the top is removed again if the extraction fails.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "agent.h"

#define BLOCK 512
#define MAX_EXTENDED 65536


enum rstate { R_HEADER, R_DATA, R_EXTENDED, R_SKIP, R_PAD, R_END };

struct tarr {
    int root; /* the directory extracted into */
    enum rstate state;
    unsigned char hdr[BLOCK];
    size_t hlen;
    unsigned long long left;
    size_t pad;
    char ext_type;
    char *ext; /* a pax header or GNU long name being read */
    size_t ext_len;
    char path[PATH_MAX], link[PATH_MAX]; /* from extended headers, for the next entry */
    long long size;                      /* likewise; -1: none */
    int out;                             /* the file being written */
    mode_t mode;
    uid_t uid;
    gid_t gid;
    struct timespec mtime;
    long long entries;
    int err;
    char msg[768];
    char **made; /* names made at the top of an existing directory */
    size_t nmade;
    char cached[PATH_MAX]; /* the last parent directory (below root), open as cached_fd: */
    int cached_fd;         /* entries of one directory, or a deep chain, walk no path */
};

static int tr_fail(struct tarr *t, const char *name, const char *fmt, int err)
{
    if (!t->err) {
        t->err = err ? err : EINVAL;
        snprintf(t->msg, sizeof t->msg, fmt, name, strerror(t->err));
    }
    return -1;
}

static unsigned long long tr_number(const unsigned char *f, size_t n)
{
    unsigned long long v = 0;
    if (f[0] & 0x80) { /* GNU base-256 */
        v = f[0] & 0x3F;
        for (size_t i = 1; i < n; i++)
            v = v << 8 | f[i];
        return v;
    }
    for (size_t i = 0; i < n && f[i]; i++)
        if (f[i] >= '0' && f[i] <= '7')
            v = v * 8 + (f[i] - '0');
    return v;
}

static void tr_remember(struct tarr *t, const char *name)
{
    char **grown = realloc(t->made, (t->nmade + 1) * sizeof *grown);
    if (grown && (grown[t->nmade] = strdup(name))) {
        t->made = grown;
        t->nmade++;
    } else if (grown) {
        t->made = grown;
    }
}

/* Open the parent of `name` (a clean relative path) below t->root, making missing
 * directories, never following a symlink. Returns an fd; *base points into name. */
static void tr_cache(struct tarr *t, const char *dir, size_t len, int fd)
{
    if (t->cached_fd >= 0)
        close(t->cached_fd);
    t->cached_fd = fd >= 0 && len < PATH_MAX ? dup(fd) : -1;
    memcpy(t->cached, dir, t->cached_fd >= 0 ? len : 0);
    t->cached[t->cached_fd >= 0 ? len : 0] = '\0';
}

static int tr_parent(struct tarr *t, char *name, const char **base)
{
    char *last = strrchr(name, '/');
    size_t plen = last ? (size_t)(last - name) : 0;
    if (last && t->cached_fd >= 0 && strlen(t->cached) == plen &&
        memcmp(t->cached, name, plen) == 0) {
        *base = last + 1;
        return dup(t->cached_fd);
    }
    int fd = dup(t->root);
    char *seg = name;
    for (char *slash; fd >= 0 && (slash = strchr(seg, '/'));) {
        *slash = '\0';
        int next = openat(fd, seg, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (next < 0 && errno == ENOENT && mkdirat(fd, seg, 0755) == 0) {
            if (seg == name && t->made)
                tr_remember(t, seg);
            next = openat(fd, seg, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        }
        *slash = '/';
        close(fd);
        fd = next;
        seg = slash + 1;
    }
    *base = seg;
    if (fd < 0)
        tr_fail(t, name, "cannot extract '%s': a parent is a symlink or not a directory (%s)",
                errno);
    else if (last)
        tr_cache(t, name, plen, fd);
    return fd;
}

/* The archive's name made clean: no leading "/" or "./", no "..", no empty parts. */
static int tr_clean(struct tarr *t, const char *raw, char *out)
{
    size_t n = 0;
    for (const char *seg = raw; *seg;) {
        const char *end = strchr(seg, '/');
        size_t len = end ? (size_t)(end - seg) : strlen(seg);
        if (len == 2 && seg[0] == '.' && seg[1] == '.')
            return tr_fail(t, raw, "refusing '%s': a name with '..' would leave the directory%.0s",
                           EINVAL);
        if (len && !(len == 1 && seg[0] == '.')) {
            if (n + len + 2 >= PATH_MAX)
                return tr_fail(t, raw, "cannot extract '%s': %s", ENAMETOOLONG);
            if (n)
                out[n++] = '/';
            memcpy(out + n, seg, len);
            n += len;
        }
        if (!end)
            break;
        seg = end + 1;
    }
    out[n] = '\0';
    return 0;
}

static void tr_meta(struct tarr *t, int parent, const char *base, int fd)
{
    struct timespec times[2] = {{0, UTIME_OMIT}, t->mtime};
    if (geteuid() == 0) {
        if (fd >= 0)
            (void)!fchown(fd, t->uid, t->gid);
        else
            (void)!fchownat(parent, base, t->uid, t->gid, AT_SYMLINK_NOFOLLOW);
    }
    if (fd >= 0) {
        fchmod(fd, t->mode);
        futimens(fd, times);
    } else {
        utimensat(parent, base, times, AT_SYMLINK_NOFOLLOW);
    }
}

/* A header block, complete in t->hdr. */
static int tr_header(struct tarr *t)
{
    const unsigned char *h = t->hdr;
    int zero = 1;
    for (int i = 0; i < BLOCK && zero; i++)
        zero = h[i] == 0;
    if (zero) {
        t->state = R_END; /* the end of the archive */
        return 0;
    }
    unsigned sum = 0;
    for (int i = 0; i < BLOCK; i++)
        sum += i >= 148 && i < 156 ? ' ' : h[i];
    if (sum != tr_number(h + 148, 8))
        return tr_fail(t, "", "not a tar stream: a header's checksum is wrong%.0s%.0s", EINVAL);
    char type = (char)h[156], raw[PATH_MAX], name[PATH_MAX];
    unsigned long long size = t->size >= 0 ? (unsigned long long)t->size : tr_number(h + 124, 12);
    t->left = size;
    t->pad = (BLOCK - size % BLOCK) % BLOCK;
    if (type == 'x' || type == 'L' || type == 'K') {
        if (size > MAX_EXTENDED)
            return tr_fail(t, "", "an extended header of more than 64 KiB%.0s%.0s", EINVAL);
        t->ext_type = type;
        t->ext_len = 0;
        t->state = size ? R_EXTENDED : R_PAD;
        return 0;
    }
    if (t->path[0]) {
        snprintf(raw, sizeof raw, "%s", t->path);
    } else if (memcmp(h + 257, "ustar", 5) == 0 && h[345]) {
        snprintf(raw, sizeof raw, "%.155s/%.100s", (const char *)h + 345, (const char *)h);
    } else {
        snprintf(raw, sizeof raw, "%.100s", (const char *)h);
    }
    char link[PATH_MAX];
    snprintf(link, sizeof link, "%s", t->link[0] ? t->link : "");
    if (!t->link[0])
        snprintf(link, sizeof link, "%.100s", (const char *)h + 157);
    t->path[0] = t->link[0] = '\0';
    t->size = -1;
    t->state = size ? R_SKIP : R_PAD;
    t->mode = (mode_t)tr_number(h + 100, 8) & 07777;
    t->uid = (uid_t)tr_number(h + 108, 8);
    t->gid = (gid_t)tr_number(h + 116, 8);
    t->mtime = (struct timespec){(time_t)tr_number(h + 136, 12), 0};
    if (type == 'g' || !strchr("01234567", type ? type : '0'))
        return 0; /* a global header, or a kind this agent does not make: skipped */
    if (tr_clean(t, raw, name) < 0)
        return -1;
    if (name[0] == '\0')
        return 0; /* "./": the directory itself */
    const char *base;
    int parent = tr_parent(t, name, &base), r = 0;
    if (parent < 0)
        return -1;
    struct stat old;
    int existed = fstatat(parent, base, &old, AT_SYMLINK_NOFOLLOW) == 0;
    if (existed && !(type == '5' && S_ISDIR(old.st_mode))) {
        tr_cache(t, "", 0, -1); /* what is replaced may be the cached directory */
        if (unlinkat(parent, base, S_ISDIR(old.st_mode) ? AT_REMOVEDIR : 0) < 0)
            r = tr_fail(t, name, "cannot replace '%s': %s", errno);
    } else if (t->made && base == name && !existed) {
        tr_remember(t, name);
    }
    if (r == 0)
        switch (type) {
        case '\0':
        case '0':
        case '7':
            t->out = openat(parent, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                            0600);
            if (t->out < 0)
                r = tr_fail(t, name, "cannot create '%s': %s", errno);
            else
                t->state = size ? R_DATA : R_PAD;
            if (t->out >= 0 && !size) {
                tr_meta(t, parent, base, t->out);
                close(t->out);
                t->out = -1;
            }
            break;
        case '5':
            if (!existed && mkdirat(parent, base, 0700) < 0) {
                r = tr_fail(t, name, "cannot make directory '%s': %s", errno);
            } else { /* what follows is most likely inside it */
                int dir = openat(parent, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                tr_cache(t, name, strlen(name), dir);
                if (dir >= 0)
                    close(dir);
                fchmodat(parent, base, t->mode, 0);
            }
            break;
        case '2':
            if (symlinkat(link, parent, base) < 0)
                r = tr_fail(t, name, "cannot make symlink '%s': %s", errno);
            else
                tr_meta(t, parent, base, -1);
            break;
        case '1': {
            char target[PATH_MAX];
            const char *tbase;
            if (tr_clean(t, link, target) < 0 || !target[0]) {
                r = tr_fail(t, name, "bad hard link '%s'%.0s", EINVAL);
                break;
            }
            int tparent = tr_parent(t, target, &tbase);
            if (tparent < 0 || linkat(tparent, tbase, parent, base, 0) < 0)
                r = tr_fail(t, name, "cannot make hard link '%s': %s", errno);
            if (tparent >= 0)
                close(tparent);
            break;
        }
        default: { /* '3', '4', '6' */
            mode_t kind = type == '3' ? S_IFCHR : type == '4' ? S_IFBLK : S_IFIFO;
            dev_t dev = makedev(tr_number(h + 329, 8), tr_number(h + 337, 8));
            if (mknodat(parent, base, kind | t->mode, dev) < 0)
                r = tr_fail(t, name, "cannot make device or fifo '%s': %s", errno);
            else
                tr_meta(t, parent, base, -1);
        }
        }
    close(parent);
    t->entries++;
    return r;
}

static void tr_extended(struct tarr *t)
{
    t->ext[t->ext_len] = '\0'; /* strtoul below stops there at the latest */
    if (t->ext_type == 'L' || t->ext_type == 'K') {
        char *dst = t->ext_type == 'L' ? t->path : t->link;
        snprintf(dst, PATH_MAX, "%.*s", (int)strnlen(t->ext, t->ext_len), t->ext);
        return;
    }
    for (size_t i = 0; i < t->ext_len;) { /* "LEN key=value\n" records */
        char *end;
        unsigned long len = strtoul(t->ext + i, &end, 10);
        char *eq = memchr(end, '=', t->ext + t->ext_len - end);
        if (len == 0 || i + len > t->ext_len || *end != ' ' || !eq || eq > t->ext + i + len)
            return;
        char *key = end + 1, *value = eq + 1;
        size_t vlen = (size_t)(t->ext + i + len - 1 - value);
        if (eq - key == 4 && memcmp(key, "path", 4) == 0)
            snprintf(t->path, PATH_MAX, "%.*s", (int)vlen, value);
        else if (eq - key == 8 && memcmp(key, "linkpath", 8) == 0)
            snprintf(t->link, PATH_MAX, "%.*s", (int)vlen, value);
        else if (eq - key == 4 && memcmp(key, "size", 4) == 0)
            t->size = strtoll(value, NULL, 10);
        i += len;
    }
}

static void tr_feed(struct tarr *t, const unsigned char *p, size_t n)
{
    while (n > 0 && !t->err) {
        size_t take;
        switch (t->state) {
        case R_HEADER:
            take = BLOCK - t->hlen < n ? BLOCK - t->hlen : n;
            memcpy(t->hdr + t->hlen, p, take);
            t->hlen += take;
            if (t->hlen == BLOCK) {
                t->hlen = 0;
                tr_header(t);
            }
            break;
        case R_DATA:
        case R_SKIP:
        case R_EXTENDED:
            take = t->left < n ? (size_t)t->left : n;
            if (t->state == R_EXTENDED) {
                memcpy(t->ext + t->ext_len, p, take);
                t->ext_len += take;
            } else if (t->state == R_DATA) {
                for (size_t done = 0; done < take;) {
                    ssize_t w = write(t->out, p + done, take - done);
                    if (w < 0 && errno != EINTR) {
                        tr_fail(t, "", "cannot write a file being extracted%.0s: %s", errno);
                        break;
                    }
                    done += w > 0 ? (size_t)w : 0;
                }
            }
            t->left -= take;
            if (t->left == 0) {
                if (t->state == R_EXTENDED)
                    tr_extended(t);
                if (t->state == R_DATA) {
                    tr_meta(t, -1, NULL, t->out);
                    close(t->out);
                    t->out = -1;
                }
                t->state = R_PAD;
            }
            break;
        case R_PAD:
            take = t->pad < n ? t->pad : n;
            t->pad -= take;
            if (t->pad == 0)
                t->state = R_HEADER;
            break;
        default:
            take = n; /* after the end: ignored */
        }
        p += take;
        n -= take;
    }
}

int op_write_tar(struct conn *c, struct jval *req)
{
    char path[PATH_MAX], tmp[PATH_MAX + 48], dir[PATH_MAX];
    struct tarr t = {.root = -1, .out = -1, .size = -1, .cached_fd = -1};
    struct stat st;
    int bad = 0;
    const char *code = NULL, *given = jstr(req, "path", &bad);
    if (resolve_path(bad ? NULL : given, path, 1, &code, t.msg, sizeof t.msg) < 0) {
        t.err = EINVAL;
    } else if (stat(path, &st) == 0) {
        if (!S_ISDIR(st.st_mode))
            tr_fail(&t, path, "cannot extract into '%s': %s", ENOTDIR);
        else if ((t.root = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
            tr_fail(&t, path, "cannot open '%s': %s", errno);
        t.made = calloc(1, sizeof *t.made); /* top-level names to undo on failure */
    } else {
        snprintf(dir, sizeof dir, "%s", path);
        *strrchr(dir, '/') = '\0';
        if (mkdir_parents(dir[0] ? dir : "/", 0755) < 0)
            tr_fail(&t, path, "cannot make the parent directories of '%s': %s", errno);
        for (int i = 0; i < 100 && !t.err; i++) {
            if ((size_t)snprintf(tmp, sizeof tmp, "%s/.%.64s.firec-%08lx", dir,
                                 strrchr(path, '/') + 1, (unsigned long)random()) >= sizeof tmp) {
                tr_fail(&t, path, "cannot extract into '%s': %s", ENAMETOOLONG);
                break;
            }
            if (mkdir(tmp, 0755) == 0)
                break;
            if (errno != EEXIST)
                tr_fail(&t, path, "cannot make a directory beside '%s': %s", errno);
        }
        if (!t.err && (t.root = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
            tr_fail(&t, tmp, "cannot open '%s': %s", errno);
    }
    t.ext = malloc(MAX_EXTENDED + 1);
    if (!t.ext)
        tr_fail(&t, "", "out of memory%.0s%.0s", ENOMEM);
    for (;;) {
        if (frame_recv(c) < 0)
            break;
        if (c->kind == FRAME_DATA && c->len == 0)
            break;
        if (c->kind != FRAME_DATA) {
            c->lost = 1;
            send_error(c, "protocol", "a control frame in the middle of a tar stream: the "
                       "extraction is abandoned and the connection closed");
            break;
        }
        tr_feed(&t, c->payload, c->len);
    }
    if (!t.err && !c->lost && t.state != R_END && t.state != R_HEADER)
        tr_fail(&t, "", "the tar stream ended in the middle of an entry%.0s%.0s", EINVAL);
    if (t.out >= 0)
        close(t.out);
    int failed = t.err || c->lost;
    if (t.made) { /* an existing directory: undo what was made at its top */
        for (size_t i = 0; i < t.nmade; i++) {
            if (failed && t.root >= 0)
                remove_tree(t.root, t.made[i]);
            free(t.made[i]);
        }
        free(t.made);
    } else if (t.root >= 0) {
        if (!failed && rename(tmp, path) < 0)
            failed = tr_fail(&t, path, "cannot move the extracted tree to '%s': %s", errno);
        if (failed)
            remove_tree(AT_FDCWD, tmp);
    }
    if (t.root >= 0)
        close(t.root);
    tr_cache(&t, "", 0, -1);
    free(t.ext);
    if (c->lost)
        return -1;
    if (t.err)
        return send_error(c, code ? code : errno_code(t.err), "%s", t.msg);
    struct jw w;
    jw_init(&w);
    jw_begin(&w);
    jw_kbool(&w, "ok", 1);
    jw_kint(&w, "entries", t.entries);
    jw_end(&w);
    return send_json(c, &w);
}
