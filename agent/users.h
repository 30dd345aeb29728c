/* users: the guest's /etc/passwd and /etc/group, read by the agent itself. */
#ifndef FIREC_AGENT_USERS_H
#define FIREC_AGENT_USERS_H

#include <sys/types.h>

struct user {
    uid_t uid;
    gid_t gid;
    char name[256];
    char home[1024];
};

/* 1: found (into *u), 0: no such user, -1: /etc/passwd cannot be read. */
int user_by_name(const char *name, struct user *u);
int user_by_uid(uid_t uid, struct user *u);

/* The groups of user `name`: `gid` first, then every group of /etc/group that
 * lists it as a member, at most `max`; how many. */
int user_groups(const char *name, gid_t gid, gid_t *groups, int max);

#endif
