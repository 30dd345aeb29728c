/* The JSON writer: objects, arrays, strings, numbers, into a growing buffer.
 *
 * A byte that is not part of valid UTF-8 is written as \udcXX (Python's
 * "surrogateescape"), so file names that are not UTF-8 reach the host intact;
 * json.c reads the same escape back into the byte.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

#define MAX_DEPTH 32


void jw_init(struct jw *w) { memset(w, 0, sizeof *w); }

void jw_free(struct jw *w)
{
    free(w->buf);
    w->buf = NULL;
}

static void put(struct jw *w, const char *s, size_t n)
{
    if (w->failed)
        return;
    if (w->len + n + 1 > w->cap) {
        size_t cap = w->cap ? w->cap : 256;
        while (cap < w->len + n + 1)
            cap *= 2;
        char *b = realloc(w->buf, cap);
        if (!b) {
            w->failed = 1;
            return;
        }
        w->buf = b;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    w->buf[w->len] = '\0';
}

static void comma(struct jw *w)
{
    if (w->depth > 0 && !w->first[w->depth])
        put(w, ",", 1);
    if (w->depth > 0)
        w->first[w->depth] = 0;
}

static void open_(struct jw *w, const char *s)
{
    put(w, s, 1);
    if (w->depth < MAX_DEPTH - 1)
        w->depth++;
    w->first[w->depth] = 1;
}

void jw_begin(struct jw *w)
{
    comma(w);
    open_(w, "{");
}

void jw_end(struct jw *w)
{
    put(w, "}", 1);
    w->depth--;
}

void jw_arr_begin(struct jw *w, const char *key)
{
    if (key)
        jw_key(w, key);
    comma(w);
    open_(w, "[");
}

void jw_arr_end(struct jw *w)
{
    put(w, "]", 1);
    w->depth--;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned cp;
    size_t len;
    if (s[0] < 0xC2)
        return 0;
    if (s[0] < 0xE0) {
        len = 2;
        cp = s[0] & 0x1F;
    } else if (s[0] < 0xF0) {
        len = 3;
        cp = s[0] & 0x0F;
    } else if (s[0] < 0xF5) {
        len = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp < 0xE000))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    return len;
}

void jw_str(struct jw *w, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    char esc[8];
    comma(w);
    put(w, "\"", 1);
    size_t run = 0; /* bytes copied as they are, pending */
    for (size_t i = 0; i < n;) {
        unsigned char ch = s[i];
        size_t len = 1;
        const char *rep = NULL;
        if (ch == '"')
            rep = "\\\"";
        else if (ch == '\\')
            rep = "\\\\";
        else if (ch == '\n')
            rep = "\\n";
        else if (ch == '\t')
            rep = "\\t";
        else if (ch == '\r')
            rep = "\\r";
        else if (ch < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", ch);
            rep = esc;
        } else if (ch >= 0x80) {
            len = utf8_len(s + i, n - i);
            if (len == 0) {
                snprintf(esc, sizeof esc, "\\udc%02x", ch);
                rep = esc;
                len = 1;
            }
        }
        if (rep) {
            put(w, (const char *)s + i - run, run);
            run = 0;
            put(w, rep, strlen(rep));
        } else {
            run += len;
        }
        i += len;
    }
    put(w, (const char *)s + n - run, run);
    put(w, "\"", 1);
}

void jw_key(struct jw *w, const char *key)
{
    jw_str(w, key, strlen(key));
    put(w, ":", 1);
    w->first[w->depth] = 1; /* the value that follows takes no comma */
}

void jw_raw(struct jw *w, const char *s)
{
    comma(w);
    put(w, s, strlen(s));
}

void jw_int(struct jw *w, long long v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", v);
    jw_raw(w, buf);
}

void jw_kstr(struct jw *w, const char *key, const char *s)
{
    jw_key(w, key);
    jw_str(w, s, strlen(s));
    w->first[w->depth] = 0;
}

void jw_kint(struct jw *w, const char *key, long long v)
{
    jw_key(w, key);
    jw_int(w, v);
    w->first[w->depth] = 0;
}

void jw_knum(struct jw *w, const char *key, double v)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%.17g", v);
    jw_key(w, key);
    jw_raw(w, buf);
    w->first[w->depth] = 0;
}

void jw_kbool(struct jw *w, const char *key, int v)
{
    jw_key(w, key);
    jw_raw(w, v ? "true" : "false");
    w->first[w->depth] = 0;
}

void jw_knull(struct jw *w, const char *key)
{
    jw_key(w, key);
    jw_raw(w, "null");
    w->first[w->depth] = 0;
}
