/* MMDS, Firecracker's metadata service: read once at boot, when the kernel
 * command line says firec.mmds=1 (or firec.mmds=ADDRESS[:PORT]).
 *
 * The agent asks for a session token (MMDS version 2: PUT /latest/api/token),
 * falls back to version 1 without one, and GETs the whole document as JSON.
 * What it reads, each only when the kernel command line did not say it:
 *
 *   {"firec": {"hostname": "...", "agent_token": "..."},
 *    "network": {"interfaces": {"eth0": {"hostname": "...", "mtu": "1500",
 *        "ipv4": {"address": "...", "netmask": "...", "gateway": "..."},
 *        "nameservers": "1.1.1.1 8.8.8.8"}}}}
 *
 * "network" is the document firec.network writes (VMNetwork.mmds()).
 * To reach MMDS, eth0 is brought up, with a link-local address while it has
 * none (Firecracker answers for 169.254.169.254 on the interfaces it is
 * attached to).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"

#define MMDS_TIMEOUT_MS 1000
#define MAX_DOCUMENT (256 * 1024)

/* One HTTP/1.1 exchange; the body (malloc'd) and its status, or NULL. */
static char *http(const struct sockaddr_in *to, const char *request, int *status, size_t *len)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    char *buf = malloc(MAX_DOCUMENT + 1);
    size_t have = 0, body_at = 0, want = 0;
    double deadline = monotonic() + MMDS_TIMEOUT_MS / 1000.0;
    if (s < 0 || !buf)
        goto fail;
    if (connect(s, (const struct sockaddr *)to, sizeof *to) < 0 && errno != EINPROGRESS)
        goto fail;
    struct pollfd p = {s, POLLOUT, 0};
    if (poll(&p, 1, MMDS_TIMEOUT_MS) != 1 || (p.revents & (POLLERR | POLLHUP)))
        goto fail;
    if (send(s, request, strlen(request), MSG_NOSIGNAL) != (ssize_t)strlen(request))
        goto fail;
    for (;;) {
        int left = (int)((deadline - monotonic()) * 1000);
        p.events = POLLIN;
        if (left <= 0 || poll(&p, 1, left) != 1)
            goto fail;
        ssize_t n = read(s, buf + have, MAX_DOCUMENT - have);
        if (n <= 0)
            break;
        have += (size_t)n;
        buf[have] = '\0';
        char *end = body_at ? NULL : strstr(buf, "\r\n\r\n");
        if (end) {
            body_at = (size_t)(end - buf) + 4;
            char *cl = strcasestr(buf, "\r\ncontent-length:");
            want = cl && cl < end ? strtoul(cl + 17, NULL, 10) : MAX_DOCUMENT;
        }
        if (body_at && have - body_at >= want)
            break;
        if (have == MAX_DOCUMENT)
            goto fail;
    }
    if (!body_at || sscanf(buf, "HTTP/1.%*d %d", status) != 1)
        goto fail;
    close(s);
    *len = have - body_at < want ? have - body_at : want;
    memmove(buf, buf + body_at, *len);
    buf[*len] = '\0';
    return buf;
fail:
    if (s >= 0)
        close(s);
    free(buf);
    return NULL;
}

static int mmds_address(const char *arg, struct sockaddr_in *to)
{
    char host[64] = "169.254.169.254";
    unsigned port = 80;
    if (strcmp(arg, "1") != 0 && sscanf(arg, "%63[0-9.]:%u", host, &port) < 1)
        return -1;
    *to = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    return inet_pton(AF_INET, host, &to->sin_addr) == 1 ? 0 : -1;
}

struct jval *mmds_document(struct arena *a, const char *arg)
{
    struct sockaddr_in to;
    if (mmds_address(arg, &to) < 0) {
        logmsg("firec.mmds=%s: not 1 nor ADDRESS[:PORT]", arg);
        return NULL;
    }
    char request[512], token[256] = "", err[128];
    int status = 0;
    size_t len = 0;
    char *body = http(&to,
                      "PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\n"
                      "X-metadata-token-ttl-seconds: 60\r\nContent-Length: 0\r\n\r\n",
                      &status, &len);
    if (body && status == 200 && len < sizeof token)
        snprintf(token, sizeof token, "%s", body);
    free(body);
    snprintf(request, sizeof request,
             "GET / HTTP/1.1\r\nHost: 169.254.169.254\r\nAccept: application/json\r\n%s%s%s\r\n",
             token[0] ? "X-metadata-token: " : "", token, token[0] ? "\r\n" : "");
    body = http(&to, request, &status, &len);
    if (!body || status != 200) {
        logmsg("MMDS did not answer (status %d): no metadata read", body ? status : 0);
        free(body);
        return NULL;
    }
    struct jval *doc = json_parse(a, body, len, err, sizeof err);
    if (!doc || doc->type != J_OBJ)
        logmsg("the MMDS document is not a JSON object: %s", doc ? "" : err);
    free(body);
    return doc && doc->type == J_OBJ ? doc : NULL;
}

/* A string at a path of keys ("network", "interfaces", "eth0", NULL), or NULL. */
const char *mmds_string(const struct jval *doc, const char *const *keys)
{
    const struct jval *v = doc;
    for (; *keys && v; keys++)
        v = jget(v, *keys);
    return v && v->type == J_STR && strlen(v->str) == v->len ? v->str : NULL;
}
