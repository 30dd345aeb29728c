/* exec: the request read into what the child needs before fork(): argv (with
 * /bin/sh -c when asked), the environment, the user (from /etc/passwd and
 * /etc/group), the PTY's size and the timeout.
 *
 * The environment is the agent's own (unless "env_clear"), then "env" set
 * over it (null unsets); PATH gets a default when it has none, TERM=xterm
 * with a PTY, and HOME and USER are those of "user" when it is given (and
 * "env" does not set them).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "exec.h"
#include "users.h"

extern char **environ;


static int env_set(char ***envp, size_t *n, const char *key, size_t klen, const char *value)
{
    char **e = *envp;
    size_t j = 0;
    for (size_t i = 0; i < *n; i++) /* drop KEY=... */
        if (strncmp(e[i], key, klen) == 0 && e[i][klen] == '=')
            free(e[i]);
        else
            e[j++] = e[i];
    *n = j;
    e[j] = NULL;
    if (!value)
        return 0;
    size_t vlen = strlen(value);
    char *kv = malloc(klen + vlen + 2);
    char **grown = realloc(e, (*n + 2) * sizeof *e);
    if (!kv || !grown) {
        free(kv);
        if (grown)
            *envp = grown;
        return -1;
    }
    memcpy(kv, key, klen);
    kv[klen] = '=';
    memcpy(kv + klen + 1, value, vlen + 1);
    grown[(*n)++] = kv;
    grown[*n] = NULL;
    *envp = grown;
    return 0;
}

static int has_env(char **envp, size_t n, const char *key)
{
    size_t klen = strlen(key);
    for (size_t i = 0; i < n; i++)
        if (strncmp(envp[i], key, klen) == 0 && envp[i][klen] == '=')
            return 1;
    return 0;
}

int parse_request(struct jval *req, struct request *r, char *msg, size_t msglen)
{
    int bad = 0;
    struct jval *argv = jget(req, "argv");
    size_t argc = 0;
    if (!argv || argv->type != J_ARR || !argv->child) {
        snprintf(msg, msglen, "exec needs \"argv\", a non-empty array of strings");
        return -1;
    }
    int shell = jbool(req, "shell", 0, &bad);
    for (struct jval *a = argv->child; a; a = a->next, argc++)
        if (a->type != J_STR || strlen(a->str) != a->len || argc >= MAX_ARGS) {
            snprintf(msg, msglen, "argv[%zu] is not a string without NUL bytes (or argv is "
                     "longer than %d)", argc, MAX_ARGS);
            return -1;
        }
    r->argv = calloc(argc + 3, sizeof *r->argv);
    if (!r->argv)
        goto oom;
    size_t i = 0;
    if (shell) {
        r->argv[i++] = "/bin/sh";
        r->argv[i++] = "-c";
    }
    for (struct jval *a = argv->child; a; a = a->next)
        r->argv[i++] = a->str;

    r->want_stdin = jbool(req, "stdin", 0, &bad);
    r->started_reply = jbool(req, "started", 1, &bad);
    r->cwd = jstr(req, "cwd", &bad);
    double timeout = 0;
    struct jval *t = jget(req, "timeout");
    if (t && t->type != J_NULL) {
        if (t->type != J_NUM || t->num <= 0) {
            snprintf(msg, msglen, "\"timeout\" must be a positive number of seconds");
            return -1;
        }
        timeout = t->num;
    }
    r->timeout = timeout;

    struct jval *pty = jget(req, "pty");
    if (pty && pty->type != J_NULL && !(pty->type == J_BOOL && !pty->boolean)) {
        long long rows = 24, cols = 80;
        if (pty->type == J_OBJ && (jint(pty, "rows", &rows) < 0 || jint(pty, "cols", &cols) < 0))
            bad = 1;
        if (rows < 1 || rows > 65535 || cols < 1 || cols > 65535) {
            snprintf(msg, msglen, "\"pty\" rows and cols must be 1 to 65535");
            return -1;
        }
        r->pty = 1;
        r->ws.ws_row = (unsigned short)rows;
        r->ws.ws_col = (unsigned short)cols;
    }

    /* who runs it */
    const char *user = jstr(req, "user", &bad);
    long long uid = -1, gid = -1;
    if (jint(req, "uid", &uid) < 0 || jint(req, "gid", &gid) < 0 || uid < -1 || gid < -1 ||
        uid > 0xFFFFFFFELL || gid > 0xFFFFFFFELL) {
        snprintf(msg, msglen, "\"uid\" and \"gid\" must be integers from 0 to 4294967294");
        return -1;
    }
    struct user found, *pw = NULL; /* the user, when /etc/passwd has it */
    if (user) {
        char *end;
        unsigned long n = strtoul(user, &end, 10);
        int numeric = *user && *end == '\0';
        if ((numeric ? user_by_uid((uid_t)n, &found) : user_by_name(user, &found)) == 1)
            pw = &found;
        if (!pw && !numeric) {
            snprintf(msg, msglen, "no user '%.100s' in the guest's /etc/passwd", user);
            return -1;
        }
        if (uid < 0)
            uid = pw ? (long long)pw->uid : (long long)n;
    } else if (uid >= 0 && user_by_uid((uid_t)uid, &found) == 1) {
        pw = &found;
    }
    if (uid >= 0 || gid >= 0) {
        r->set_ids = 1;
        r->uid = uid >= 0 ? (uid_t)uid : getuid();
        r->gid = gid >= 0 ? (gid_t)gid : pw ? pw->gid : (uid >= 0 ? 0 : getgid());
        if (pw && gid < 0) {
            r->ngroups = user_groups(pw->name, r->gid, r->groups, MAX_GROUPS);
        } else {
            r->groups[0] = r->gid;
            r->ngroups = 1;
        }
    }

    /* its environment */
    size_t n = 0;
    int clear = jbool(req, "env_clear", 0, &bad);
    for (char **e = environ; !clear && e && *e; e++)
        n++;
    r->envp = calloc(n + 1, sizeof *r->envp);
    if (!r->envp)
        goto oom;
    for (size_t k = 0; k < n; k++)
        if (!(r->envp[k] = strdup(environ[k])))
            goto oom;
    struct jval *env = jget(req, "env");
    if (env && env->type != J_NULL && env->type != J_OBJ) {
        snprintf(msg, msglen, "\"env\" must be an object of strings");
        return -1;
    }
    if (pw && user && /* the user's own, unless "env" says otherwise below */
        (env_set(&r->envp, &n, "HOME", 4, pw->home) < 0 ||
         env_set(&r->envp, &n, "USER", 4, pw->name) < 0))
        goto oom;
    for (struct jval *e = env ? env->child : NULL; e; e = e->next) {
        if ((e->type != J_STR && e->type != J_NULL) || !*e->key || strchr(e->key, '=') ||
            (e->type == J_STR && strlen(e->str) != e->len)) {
            snprintf(msg, msglen, "env: '%.100s' must be a name without '=' mapped to a string "
                     "(or null, to unset it)", e->key);
            return -1;
        }
        if (env_set(&r->envp, &n, e->key, strlen(e->key), e->type == J_STR ? e->str : NULL) < 0)
            goto oom;
    }
    if (!has_env(r->envp, n, "PATH") && env_set(&r->envp, &n, "PATH", 4, DEFAULT_PATH) < 0)
        goto oom;
    if (r->pty && !has_env(r->envp, n, "TERM") && env_set(&r->envp, &n, "TERM", 4, "xterm") < 0)
        goto oom;
    /* with a terminal, its size is the terminal's: the agent's own LINES and COLUMNS go */
    for (size_t k = 0; r->pty && k < 2; k++) {
        const char *name = k ? "COLUMNS" : "LINES";
        if (!jget(env, name) && env_set(&r->envp, &n, name, strlen(name), NULL) < 0)
            goto oom;
    }
    if (bad) {
        snprintf(msg, msglen, "exec: a field has the wrong type (argv: [str], env: {str: str}, "
                 "cwd and user: str, uid, gid: int, stdin, shell, env_clear: bool, pty: "
                 "{rows, cols}, timeout: number)");
        return -1;
    }
    return 0;
oom:
    snprintf(msg, msglen, "out of memory");
    return -1;
}

void free_request(struct request *r)
{
    free(r->argv);
    for (char **e = r->envp; e && *e; e++)
        free(*e);
    free(r->envp);
}

