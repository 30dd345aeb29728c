/* exec: the request, as exec_request.c reads it and exec.c runs it. */
#ifndef FIREC_EXEC_H
#define FIREC_EXEC_H

#include <sys/ioctl.h>
#include <sys/types.h>

#include "agent.h"

#define MAX_ARGS 4096
#define MAX_GROUPS 64
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

enum stage { STAGE_CWD = 1, STAGE_IDS, STAGE_EXEC, STAGE_PTY };

struct request {
    char **argv;
    char **envp;
    const char *cwd;
    int set_ids;
    uid_t uid;
    gid_t gid;
    gid_t groups[MAX_GROUPS];
    int ngroups;
    int want_stdin;
    int started_reply; /* "started": answer {"ok": true, "pid": N} once it runs */
    int pty;
    struct winsize ws;
    double timeout;
};

struct failure {
    int stage;
    int err;
};

/* Fill r from req; on a bad request, a message in msg and -1. */
int parse_request(struct jval *req, struct request *r, char *msg, size_t msglen);
void free_request(struct request *r);

#endif
