/* A small JSON reader (the writer is jsonw.c): enough for the control frames.
 *
 * The reader parses one document into a tree of nodes allocated from an
 * arena that is freed at once. Strings are decoded to bytes; \uDC80..\uDCFF
 * (a lone low surrogate, Python's "surrogateescape") stands for the raw byte
 * 0x80..0xFF, so a file name that is not UTF-8 travels both ways intact.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

#define MAX_DEPTH 32

struct chunk {
    struct chunk *next;
    size_t used, cap;
    unsigned char data[];
};

struct arena {
    struct chunk *head;
};

struct arena *arena_new(void) { return calloc(1, sizeof(struct arena)); }

void arena_free(struct arena *a)
{
    if (!a)
        return;
    for (struct chunk *c = a->head, *n; c; c = n) {
        n = c->next;
        free(c);
    }
    free(a);
}

static void *arena_alloc(struct arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    struct chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 16384 ? n : 16384;
        c = malloc(sizeof *c + cap);
        if (!c)
            return NULL;
        c->cap = cap;
        c->used = 0;
        c->next = a->head;
        a->head = c;
    }
    void *p = c->data + c->used;
    c->used += n;
    return p;
}

struct parser {
    struct arena *a;
    const char *start, *p, *end;
    char *err;
    size_t errlen;
    int depth;
};

static void fail(struct parser *ps, const char *what)
{
    if (ps->err[0] == '\0')
        snprintf(ps->err, ps->errlen, "%s at offset %zu", what, (size_t)(ps->p - ps->start));
}

static void skip_ws(struct parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static int hex4(const char *s, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char ch = s[i];
        v <<= 4;
        if (ch >= '0' && ch <= '9')
            v |= (unsigned)(ch - '0');
        else if (ch >= 'a' && ch <= 'f')
            v |= (unsigned)(ch - 'a' + 10);
        else if (ch >= 'A' && ch <= 'F')
            v |= (unsigned)(ch - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* After the opening quote; decodes into the arena. */
static int parse_string(struct parser *ps, char **out, size_t *outlen)
{
    const char *start = ps->p;
    size_t cap = 0;
    while (start + cap < ps->end && start[cap] != '"')
        cap += start[cap] == '\\' ? 2 : 1;
    char *o = arena_alloc(ps->a, cap + 1);
    if (!o) {
        fail(ps, "out of memory");
        return -1;
    }
    size_t n = 0;
    while (ps->p < ps->end) {
        unsigned char ch = (unsigned char)*ps->p++;
        if (ch == '"') {
            o[n] = '\0';
            *out = o;
            *outlen = n;
            return 0;
        }
        if (ch < 0x20) {
            fail(ps, "control character in a string");
            return -1;
        }
        if (ch != '\\') {
            o[n++] = (char)ch;
            continue;
        }
        if (ps->p >= ps->end)
            break;
        char e = *ps->p++;
        switch (e) {
        case '"': o[n++] = '"'; break;
        case '\\': o[n++] = '\\'; break;
        case '/': o[n++] = '/'; break;
        case 'b': o[n++] = '\b'; break;
        case 'f': o[n++] = '\f'; break;
        case 'n': o[n++] = '\n'; break;
        case 'r': o[n++] = '\r'; break;
        case 't': o[n++] = '\t'; break;
        case 'u': {
            unsigned cp;
            if (ps->end - ps->p < 4 || hex4(ps->p, &cp) < 0) {
                fail(ps, "bad \\u escape");
                return -1;
            }
            ps->p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && ps->end - ps->p >= 6 && ps->p[0] == '\\' &&
                ps->p[1] == 'u') {
                unsigned lo;
                if (hex4(ps->p + 2, &lo) == 0 && lo >= 0xDC00 && lo < 0xE000) {
                    ps->p += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
            }
            if (cp >= 0xDC80 && cp <= 0xDCFF) { /* surrogateescape: a raw byte */
                o[n++] = (char)(cp - 0xDC00);
            } else if (cp >= 0xD800 && cp < 0xE000) {
                fail(ps, "lone surrogate in a string");
                return -1;
            } else {
                /* an escape is 6 or 12 input bytes, the UTF-8 at most 4: it fits */
                n += put_utf8(o + n, cp);
            }
            break;
        }
        default: fail(ps, "bad escape in a string"); return -1;
        }
    }
    fail(ps, "unterminated string");
    return -1;
}

static struct jval *parse_value(struct parser *ps);

static struct jval *new_node(struct parser *ps, enum jtype t)
{
    struct jval *v = arena_alloc(ps->a, sizeof *v);
    if (!v) {
        fail(ps, "out of memory");
        return NULL;
    }
    memset(v, 0, sizeof *v);
    v->type = t;
    return v;
}

static int literal(struct parser *ps, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
        return 0;
    ps->p += n;
    return 1;
}

static struct jval *parse_container(struct parser *ps, int object)
{
    struct jval *v = new_node(ps, object ? J_OBJ : J_ARR), **tail;
    if (!v)
        return NULL;
    if (++ps->depth > MAX_DEPTH) {
        fail(ps, "nested too deeply");
        return NULL;
    }
    tail = &v->child;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == (object ? '}' : ']')) {
        ps->p++;
        ps->depth--;
        return v;
    }
    for (;;) {
        char *key = NULL;
        size_t keylen = 0;
        skip_ws(ps);
        if (object) {
            if (ps->p >= ps->end || *ps->p != '"') {
                fail(ps, "expected a member name");
                return NULL;
            }
            ps->p++;
            if (parse_string(ps, &key, &keylen) < 0)
                return NULL;
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':') {
                fail(ps, "expected ':'");
                return NULL;
            }
            ps->p++;
        }
        struct jval *item = parse_value(ps);
        if (!item)
            return NULL;
        item->key = key;
        *tail = item;
        tail = &item->next;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == (object ? '}' : ']')) {
            ps->p++;
            ps->depth--;
            return v;
        }
        fail(ps, object ? "expected ',' or '}'" : "expected ',' or ']'");
        return NULL;
    }
}

static struct jval *parse_value(struct parser *ps)
{
    skip_ws(ps);
    if (ps->p >= ps->end) {
        fail(ps, "unexpected end of input");
        return NULL;
    }
    char ch = *ps->p;
    struct jval *v;
    if (ch == '{' || ch == '[') {
        ps->p++;
        return parse_container(ps, ch == '{');
    }
    if (ch == '"') {
        ps->p++;
        if (!(v = new_node(ps, J_STR)) || parse_string(ps, &v->str, &v->len) < 0)
            return NULL;
        return v;
    }
    if (literal(ps, "true") || literal(ps, "false")) {
        if ((v = new_node(ps, J_BOOL)))
            v->boolean = ps->p[-1] == 'e' && ps->p[-2] == 'u';
        return v;
    }
    if (literal(ps, "null"))
        return new_node(ps, J_NULL);
    if (ch == '-' || (ch >= '0' && ch <= '9')) {
        char buf[64];
        size_t n = 0;
        while (ps->p + n < ps->end && n < sizeof buf - 1 && strchr("+-.eE0123456789", ps->p[n]))
            n++;
        memcpy(buf, ps->p, n);
        buf[n] = '\0';
        char *endp;
        double d = strtod(buf, &endp);
        if (endp != buf + n || !isfinite(d)) {
            fail(ps, "bad number");
            return NULL;
        }
        ps->p += n;
        if ((v = new_node(ps, J_NUM)))
            v->num = d;
        return v;
    }
    fail(ps, "unexpected character");
    return NULL;
}

struct jval *json_parse(struct arena *a, const char *text, size_t n, char *err, size_t errlen)
{
    struct parser ps = {a, text, text, text + n, err, errlen, 0};
    err[0] = '\0';
    struct jval *v = parse_value(&ps);
    if (v) {
        skip_ws(&ps);
        if (ps.p != ps.end) {
            fail(&ps, "trailing data after the JSON value");
            return NULL;
        }
    }
    return v;
}

struct jval *jget(const struct jval *obj, const char *key)
{
    if (!obj || obj->type != J_OBJ)
        return NULL;
    for (struct jval *v = obj->child; v; v = v->next)
        if (v->key && strcmp(v->key, key) == 0)
            return v;
    return NULL;
}

const char *jstr(const struct jval *obj, const char *key, int *bad)
{
    struct jval *v = jget(obj, key);
    if (!v || v->type == J_NULL)
        return NULL;
    if (v->type != J_STR || strlen(v->str) != v->len) {
        *bad = 1;
        return NULL;
    }
    return v->str;
}

int jint(const struct jval *obj, const char *key, long long *out)
{
    struct jval *v = jget(obj, key);
    if (!v || v->type == J_NULL)
        return 0;
    if (v->type != J_NUM || v->num > 9.0e15 || v->num < -9.0e15 ||
        (double)(long long)v->num != v->num)
        return -1;
    *out = (long long)v->num;
    return 1;
}

int jbool(const struct jval *obj, const char *key, int dflt, int *bad)
{
    struct jval *v = jget(obj, key);
    if (!v || v->type == J_NULL)
        return dflt;
    if (v->type != J_BOOL) {
        *bad = 1;
        return dflt;
    }
    return v->boolean;
}
