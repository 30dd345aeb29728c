/* users: the guest's /etc/passwd and /etc/group, read by the agent itself.
 *
 * Not through libc's getpwnam() and getgrouplist(): a static glibc build (the
 * fallback when musl is not there) would load NSS modules at run time, which a
 * static binary cannot do safely (it crashed on "nobody"), and the files of
 * the guest are what an exec's "user" names anyway. Lines are
 * "name:password:uid:gid:gecos:home:shell" and "name:password:gid:member,member".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "users.h"

/* The `n` fields of `line` split at ':' in place; 0 if it has fewer. */
static int fields(char *line, char **field, int n)
{
    line[strcspn(line, "\n")] = '\0';
    for (int i = 0; i < n; i++) {
        field[i] = line;
        char *colon = strchr(line, ':');
        if (i < n - 1) {
            if (!colon)
                return 0;
            *colon = '\0';
            line = colon + 1;
        }
    }
    return 1;
}

static int number(const char *text, unsigned long *value)
{
    char *end;
    errno = 0;
    *value = strtoul(text, &end, 10);
    return *text && *end == '\0' && errno == 0 && *value <= 0xFFFFFFFEUL;
}

/* The first user of /etc/passwd named `name` (or, if `name` is NULL, with `uid`). */
static int find_user(const char *name, uid_t uid, struct user *u)
{
    FILE *f = fopen("/etc/passwd", "re");
    if (!f)
        return -1;
    char *line = NULL;
    size_t cap = 0;
    int found = 0;
    while (!found && getline(&line, &cap, f) >= 0) {
        char *field[7];
        unsigned long id, gid;
        if (!fields(line, field, 7) || !number(field[2], &id) || !number(field[3], &gid))
            continue;
        if (name ? strcmp(field[0], name) != 0 : (uid_t)id != uid)
            continue;
        u->uid = (uid_t)id;
        u->gid = (gid_t)gid;
        snprintf(u->name, sizeof u->name, "%s", field[0]);
        snprintf(u->home, sizeof u->home, "%s", field[5]);
        found = 1;
    }
    free(line);
    fclose(f);
    return found;
}

int user_by_name(const char *name, struct user *u)
{
    return find_user(name, 0, u);
}

int user_by_uid(uid_t uid, struct user *u)
{
    return find_user(NULL, uid, u);
}

int user_groups(const char *name, gid_t gid, gid_t *groups, int max)
{
    int n = 0;
    if (max < 1)
        return 0;
    groups[n++] = gid;
    FILE *f = fopen("/etc/group", "re");
    if (!f)
        return n;
    char *line = NULL;
    size_t cap = 0;
    while (n < max && getline(&line, &cap, f) >= 0) {
        char *field[4];
        unsigned long id;
        if (!fields(line, field, 4) || !number(field[2], &id) || (gid_t)id == gid)
            continue;
        for (char *save, *m = strtok_r(field[3], ",", &save); m; m = strtok_r(NULL, ",", &save))
            if (strcmp(m, name) == 0) {
                groups[n++] = (gid_t)id;
                break;
            }
    }
    free(line);
    fclose(f);
    return n;
}
