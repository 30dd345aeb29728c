/* Directories as tar streams, both ways: read_tar sends one (here), write_tar
 * extracts one (tar_in.c).
 *
 * The format is POSIX ustar, with pax extended headers ('x') for names and
 * link targets longer than the ustar fields and for sizes of 8 GiB or more;
 * GNU long names ('L', 'K') are read too. Regular files, directories,
 * symlinks, hard links (read), devices and fifos. Files are streamed through
 * one frame-sized buffer, never held whole. The writer archives hard links
 * as separate files, and leaves sockets out.
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
#include <sys/sysmacros.h>
#include <unistd.h>

#include "agent.h"

#define BLOCK 512


struct tarw {
    struct conn *c;
    unsigned char *buf; /* MAX_FRAME bytes, sent as one frame when full */
    size_t len;
    int lost;
};

static int tw_flush(struct tarw *t)
{
    if (t->len && frame_send(t->c, FRAME_DATA, t->buf, t->len) < 0)
        return -1;
    t->len = 0;
    return 0;
}

static int tw_put(struct tarw *t, const void *p, size_t n)
{
    while (n > 0) {
        size_t take = MAX_FRAME - t->len < n ? MAX_FRAME - t->len : n;
        memcpy(t->buf + t->len, p, take);
        t->len += take;
        p = (const char *)p + take;
        n -= take;
        if (t->len == MAX_FRAME && tw_flush(t) < 0)
            return -1;
    }
    return 0;
}

static void octal(char *field, size_t width, unsigned long long v)
{
    snprintf(field, width, "%0*llo", (int)width - 1, v);
}

static int pax_record(char *out, size_t cap, size_t *len, const char *key, const char *value)
{
    size_t body = strlen(key) + strlen(value) + 3; /* ' ' '=' '\n' */
    size_t total = body + 1;
    while (snprintf(NULL, 0, "%zu", total) + body != total)
        total++;
    if (*len + total > cap)
        return -1;
    *len += (size_t)snprintf(out + *len, cap - *len, "%zu %s=%s\n", total, key, value);
    return 0;
}

/* noinline: its pax buffer must not land in tw_entry's recursive frame */
static __attribute__((noinline)) int tw_header(struct tarw *t, const char *name,
                                               const struct stat *st, char type,
                     const char *link, unsigned long long size)
{
    unsigned char h[BLOCK];
    char pax[3 * PATH_MAX];
    size_t plen = 0;
    char sizebuf[32];
    if (strlen(name) >= 100 && pax_record(pax, sizeof pax, &plen, "path", name) < 0)
        return -1;
    if (link && strlen(link) >= 100 && pax_record(pax, sizeof pax, &plen, "linkpath", link) < 0)
        return -1;
    if (size > 077777777777ULL) {
        snprintf(sizebuf, sizeof sizebuf, "%llu", size);
        pax_record(pax, sizeof pax, &plen, "size", sizebuf);
    }
    if (plen > 0) {
        struct stat pst = *st;
        pst.st_mode = 0644;
        if (tw_header(t, "././@PaxHeader", &pst, 'x', NULL, plen) < 0 || tw_put(t, pax, plen) < 0)
            return -1;
        static const unsigned char zeros[BLOCK];
        if (plen % BLOCK && tw_put(t, zeros, BLOCK - plen % BLOCK) < 0)
            return -1;
    }
    memset(h, 0, sizeof h);
    memcpy(h, name, strnlen(name, 99));
    octal((char *)h + 100, 8, st->st_mode & 07777);
    octal((char *)h + 108, 8, st->st_uid & 07777777);
    octal((char *)h + 116, 8, st->st_gid & 07777777);
    octal((char *)h + 124, 12, size > 077777777777ULL ? 0 : size);
    octal((char *)h + 136, 12, (unsigned long long)(st->st_mtim.tv_sec > 0 ? st->st_mtim.tv_sec : 0));
    h[156] = (unsigned char)type;
    if (link)
        memcpy(h + 157, link, strnlen(link, 99));
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    if (type == '3' || type == '4') {
        octal((char *)h + 329, 8, major(st->st_rdev));
        octal((char *)h + 337, 8, minor(st->st_rdev));
    }
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < BLOCK; i++)
        sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
    return tw_put(t, h, BLOCK);
}

/* Copy exactly `size` bytes of fd (zeros if it shrank meanwhile), then pad. */
static int tw_file(struct tarw *t, int fd, unsigned long long size)
{
    unsigned long long left = size;
    while (left > 0) {
        if (t->len == MAX_FRAME && tw_flush(t) < 0)
            return -1;
        size_t room = MAX_FRAME - t->len;
        size_t want = left < room ? (size_t)left : room;
        ssize_t n = read(fd, t->buf + t->len, want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -2;
        if (n == 0) {
            memset(t->buf + t->len, 0, want);
            n = (ssize_t)want;
        }
        t->len += (size_t)n;
        left -= (unsigned long long)n;
    }
    static const unsigned char zeros[BLOCK];
    return size % BLOCK ? tw_put(t, zeros, BLOCK - size % BLOCK) : 0;
}

/* Kept out of tw_entry, which recurses: its buffer is not on every level's frame. */
static __attribute__((noinline)) int tw_symlink(struct tarw *t, int parent, const char *name,
                                                const char *rel, const struct stat *st)
{
    char link[PATH_MAX];
    ssize_t n = readlinkat(parent, name, link, sizeof link - 1);
    if (n < 0)
        return -3;
    link[n] = '\0';
    return tw_header(t, rel, st, '2', link, 0);
}

/* One entry (and what is under it). 0, -1 when the host is gone, -2 after an error reply. */
static int tw_entry(struct tarw *t, int parent, const char *name, char *rel, size_t rlen)
{
    struct stat st;
    if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : -3;
    if (S_ISDIR(st.st_mode)) {
        rel[rlen] = '/';
        rel[rlen + 1] = '\0';
        if (rlen && tw_header(t, rel, &st, '5', NULL, 0) < 0)
            return -1;
        rel[rlen] = '\0';
        int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
        if (!d) {
            if (fd >= 0)
                close(fd);
            return -3;
        }
        struct dirent *e;
        int r = 0;
        while (r == 0 && (e = readdir(d))) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            size_t n = strlen(e->d_name);
            if (rlen + n + 2 >= PATH_MAX) {
                errno = ENAMETOOLONG;
                r = -3;
                break;
            }
            size_t at = rlen ? rlen + 1 : 0;
            if (rlen)
                rel[rlen] = '/';
            memcpy(rel + at, e->d_name, n + 1);
            r = tw_entry(t, fd, e->d_name, rel, at + n);
            rel[rlen] = '\0';
        }
        closedir(d);
        return r;
    }
    if (S_ISREG(st.st_mode)) {
        int fd = openat(parent, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            return -3;
        int r = tw_header(t, rel, &st, '0', NULL, (unsigned long long)st.st_size);
        if (r == 0)
            r = tw_file(t, fd, (unsigned long long)st.st_size);
        close(fd);
        return r == -2 ? -3 : r;
    }
    if (S_ISLNK(st.st_mode))
        return tw_symlink(t, parent, name, rel, &st);
    char type = S_ISCHR(st.st_mode) ? '3' : S_ISBLK(st.st_mode) ? '4' : S_ISFIFO(st.st_mode) ? '6' : 0;
    return type ? tw_header(t, rel, &st, type, NULL, 0) : 0; /* sockets are left out */
}

int op_read_tar(struct conn *c, struct jval *req)
{
    char path[PATH_MAX], rel[PATH_MAX];
    int bad = 0;
    const char *code, *given = jstr(req, "path", &bad);
    char msg[768];
    if (resolve_path(bad ? NULL : given, path, 1, &code, msg, sizeof msg) < 0)
        return send_error(c, code, "%s", msg);
    struct stat st;
    if (stat(path, &st) < 0) {
        int err = errno;
        return send_error(c, errno_code(err), "cannot read '%.300s': %s", path, strerror(err));
    }
    struct tarw t = {.c = c, .buf = malloc(MAX_FRAME)};
    if (!t.buf)
        return send_error(c, "internal", "out of memory");
    struct jw w;
    jw_init(&w);
    jw_begin(&w);
    jw_kbool(&w, "ok", 1);
    jw_kstr(&w, "type", S_ISDIR(st.st_mode) ? "directory" : "file");
    jw_end(&w);
    int r = send_json(c, &w);
    if (r == 0) {
        rel[0] = '\0';
        if (S_ISDIR(st.st_mode)) {
            r = tw_entry(&t, AT_FDCWD, path, rel, 0);
        } else {
            snprintf(rel, sizeof rel, "%s", strrchr(path, '/') + 1);
            r = tw_entry(&t, AT_FDCWD, path, rel, strlen(rel));
        }
        if (r == -3) {
            int err = errno;
            r = send_error(c, errno_code(err), "cannot archive '%.300s' ('%.300s'): %s", path,
                           rel, strerror(err));
        } else if (r == 0) {
            static const unsigned char end[2 * BLOCK];
            r = tw_put(&t, end, sizeof end) < 0 || tw_flush(&t) < 0 ? -1
                : frame_send(c, FRAME_DATA, "", 0);
        }
    }
    free(t.buf);
    return r < 0 ? -1 : 0;
}

