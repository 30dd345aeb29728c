/* identity: what makes a guest restored from a snapshot a machine of its own.
 *
 * Every VM restored from one snapshot wakes with the snapshot's clock, kernel
 * random state, hostname and MAC addresses. The host sends each its own
 * (docs/agent-protocol.md):
 *
 *   {"op": "identity", "time": 1733300000.25, "seed": "<hex>", "hostname": "vm-7",
 *    "macs": {"eth0": "06:00:ac:10:00:07"}}
 *
 * every member optional. The whole request is checked first; then, as the
 * guest's init, the agent applies them in that order: the clock
 * (clock_settime), the seed (RNDADDENTROPY, credited, then RNDRESEEDCRNG so that
 * the next read of the kernel's generator draws on it), the hostname, and each
 * MAC: the interface is taken down for the change (as every driver accepts) and
 * brought up again with the default route it had (taking a link down drops its
 * gateway routes; its addresses stay). As a service (--service: firec's
 * emulator, a test) the machine is not the agent's to change: it applies
 * nothing, says so in its reply, and logs what it was given.
 *
 * The reply: {"ok": true, "applied": ["time", "seed", "hostname", "mac eth0"]}.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <net/route.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

/* <linux/random.h>, which musl's headers lack */
#define RNDADDENTROPY_ _IOW('R', 0x03, int[2])
#define RNDRESEEDCRNG_ _IO('R', 0x07)

#define MAX_SEED 512     /* bytes */
#define MAX_HOSTNAME 64  /* HOST_NAME_MAX */
#define MAX_MACS 16

struct identity {
    int has_time;
    struct timespec time;
    unsigned char seed[MAX_SEED];
    size_t seed_len;
    const char *hostname;
    size_t nmacs;
    const char *dev[MAX_MACS];
    unsigned char mac[MAX_MACS][6];
};

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

static int parse_mac(const char *s, unsigned char out[6])
{
    for (int i = 0; i < 6; i++) {
        int hi = hexval(s[0]), lo = hi < 0 ? -1 : hexval(s[1]);
        if (lo < 0 || (i < 5 ? s[2] != ':' : s[2] != '\0'))
            return -1;
        out[i] = (unsigned char)(hi << 4 | lo);
        s += 3;
    }
    return 0;
}

/* The request into id; 0, or -1 with what is wrong in msg. */
static int read_request(struct jval *req, struct identity *id, char *msg, size_t msglen)
{
    int bad = 0;
    struct jval *t = jget(req, "time");
    if (t && t->type != J_NULL) {
        if (t->type != J_NUM || !(t->num > 0)) {
            snprintf(msg, msglen, "\"time\" must be seconds since the epoch, a number > 0");
            return -1;
        }
        id->has_time = 1;
        id->time.tv_sec = (time_t)t->num;
        id->time.tv_nsec = (long)((t->num - (double)id->time.tv_sec) * 1e9);
    }
    const char *seed = jstr(req, "seed", &bad);
    if (bad || (seed && (strlen(seed) % 2 || strlen(seed) > 2 * MAX_SEED))) {
        snprintf(msg, msglen, "\"seed\" must be a hex string of at most %d bytes", MAX_SEED);
        return -1;
    }
    for (size_t i = 0; seed && seed[2 * i]; i++) {
        int hi = hexval(seed[2 * i]), lo = hexval(seed[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            snprintf(msg, msglen, "\"seed\" must be a hex string (found '%c')",
                     hi < 0 ? seed[2 * i] : seed[2 * i + 1]);
            return -1;
        }
        id->seed[id->seed_len++] = (unsigned char)(hi << 4 | lo);
    }
    id->hostname = jstr(req, "hostname", &bad);
    if (bad || (id->hostname && (!*id->hostname || strlen(id->hostname) > MAX_HOSTNAME))) {
        snprintf(msg, msglen, "\"hostname\" must be a string of 1 to %d bytes", MAX_HOSTNAME);
        return -1;
    }
    struct jval *macs = jget(req, "macs");
    if (macs && macs->type != J_NULL && macs->type != J_OBJ) {
        snprintf(msg, msglen, "\"macs\" must be an object: interface name -> MAC address");
        return -1;
    }
    for (struct jval *m = macs && macs->type == J_OBJ ? macs->child : NULL; m; m = m->next) {
        if (id->nmacs == MAX_MACS) {
            snprintf(msg, msglen, "\"macs\" names more than %d interfaces", MAX_MACS);
            return -1;
        }
        if (!*m->key || strlen(m->key) >= IFNAMSIZ || strchr(m->key, '/')) {
            snprintf(msg, msglen, "\"macs\": '%.40s' is not an interface name", m->key);
            return -1;
        }
        unsigned char *mac = id->mac[id->nmacs];
        if (m->type != J_STR || parse_mac(m->str, mac) < 0 || (mac[0] & 1) ||
            !(mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5])) {
            snprintf(msg, msglen,
                     "\"macs\".%s must be a unicast MAC address such as \"06:00:0a:00:00:02\"",
                     m->key);
            return -1;
        }
        id->dev[id->nmacs++] = m->key;
    }
    return 0;
}

/* The gateway of dev's default route, from /proc/net/route; 0 when it has none. */
static int default_gateway(const char *dev, struct in_addr *gw)
{
    FILE *f = fopen("/proc/net/route", "re");
    char line[256], name[IFNAMSIZ + 1];
    unsigned long dst, via, mask;
    unsigned flags;
    int found = 0;
    if (!f)
        return 0;
    while (!found && fgets(line, sizeof line, f))
        if (sscanf(line, "%16s %lx %lx %x %*d %*d %*d %lx", name, &dst, &via, &flags, &mask) ==
                5 &&
            strcmp(name, dev) == 0 && dst == 0 && mask == 0 && (flags & RTF_GATEWAY)) {
            gw->s_addr = (in_addr_t)via; /* printed as the in-memory value of the address */
            found = 1;
        }
    fclose(f);
    return found;
}

/* Give dev the address mac: down, the change, up again as it was. 0, or -1 with errno and
 * what failed in *step. */
static int set_mac(int s, const char *dev, const unsigned char mac[6], const char **step)
{
    struct ifreq ifr = {0};
    struct in_addr gw;
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", dev);
    *step = "find";
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        return -1;
    short flags = ifr.ifr_flags;
    int up = flags & IFF_UP, routed = up && default_gateway(dev, &gw);
    *step = "take down";
    ifr.ifr_flags = (short)(flags & ~IFF_UP);
    if (up && ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        return -1;
    *step = "set the MAC of";
    ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
    memcpy(ifr.ifr_hwaddr.sa_data, mac, 6);
    int r = ioctl(s, SIOCSIFHWADDR, &ifr), err = errno;
    ifr.ifr_flags = flags;
    if (up && ioctl(s, SIOCSIFFLAGS, &ifr) < 0 && r == 0) {
        *step = "bring up again";
        return -1;
    }
    if (routed && add_default_route(s, dev, gw) < 0 && r == 0) {
        *step = "add the default route again to";
        return -1;
    }
    errno = err;
    return r;
}

static void logged(const struct identity *id, int applying)
{
    char macs[MAX_MACS * 40] = "";
    size_t n = 0;
    for (size_t i = 0; i < id->nmacs && n < sizeof macs; i++) {
        const unsigned char *m = id->mac[i];
        n += (size_t)snprintf(macs + n, sizeof macs - n, " %s %02x:%02x:%02x:%02x:%02x:%02x",
                              id->dev[i], m[0], m[1], m[2], m[3], m[4], m[5]);
    }
    logmsg("identity%s: hostname %s,%s%s seed of %zu bytes, %s",
           applying ? "" : " (not applied: a service, not the machine's init)", id->hostname ? id->hostname : "kept", n ? macs : " MACs kept", n ? "," : "",
           id->seed_len, id->has_time ? "the time" : "no time");
}

int op_identity(struct conn *c, struct jval *req)
{
    struct identity id = {0};
    char msg[256];
    if (read_request(req, &id, msg, sizeof msg) < 0)
        return send_error(c, "bad_request", "%s", msg);
    logged(&id, g_cfg.pid1);
    struct jw w;
    jw_init(&w);
    jw_begin(&w);
    jw_kbool(&w, "ok", 1);
    jw_arr_begin(&w, "applied");
    if (!g_cfg.pid1) {
        jw_arr_end(&w);
        jw_kstr(&w, "skipped", "the agent runs as a service, not as its machine's init");
        jw_end(&w);
        return send_json(c, &w);
    }
    int err = 0;
    const char *what = NULL;
    char failed[64]; /* the step and the interface that failed */
    if (id.has_time) {
        if (clock_settime(CLOCK_REALTIME, &id.time) < 0)
            err = errno, what = "set the clock";
        else
            jw_str(&w, "time", 4);
    }
    if (!what && id.seed_len) {
        struct {
            int entropy_count, buf_size;
            unsigned char buf[MAX_SEED];
        } pool = {(int)id.seed_len * 8, (int)id.seed_len, {0}};
        memcpy(pool.buf, id.seed, id.seed_len);
        int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
        if (fd < 0 || ioctl(fd, RNDADDENTROPY_, &pool) < 0)
            err = errno, what = "add the seed to the kernel's random pool (/dev/urandom)";
        else
            jw_str(&w, "seed", 4);
        if (fd >= 0 && !what && ioctl(fd, RNDRESEEDCRNG_, 0) < 0 && errno != EINVAL &&
            errno != ENOTTY)
            err = errno, what = "reseed the kernel's random generator";
        if (fd >= 0)
            close(fd);
        explicit_bzero(&pool, sizeof pool);
    }
    explicit_bzero(id.seed, sizeof id.seed);
    if (!what && id.hostname) {
        if (sethostname(id.hostname, strlen(id.hostname)) < 0)
            err = errno, what = "set the hostname";
        else
            jw_str(&w, "hostname", 8);
    }
    int s = what || !id.nmacs ? -1 : socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (!what && id.nmacs && s < 0)
        err = errno, what = "open a socket for the interfaces";
    for (size_t i = 0; !what && i < id.nmacs; i++) {
        const char *step;
        char item[8 + IFNAMSIZ];
        if (set_mac(s, id.dev[i], id.mac[i], &step) < 0) {
            err = errno;
            snprintf(failed, sizeof failed, "%s %s", step, id.dev[i]);
            what = failed;
        } else {
            snprintf(item, sizeof item, "mac %s", id.dev[i]);
            jw_str(&w, item, strlen(item));
        }
    }
    if (s >= 0)
        close(s);
    jw_arr_end(&w);
    jw_end(&w);
    if (what) {
        jw_free(&w);
        return send_error(c, errno_code(err), "cannot %s: %s", what, strerror(err));
    }
    return send_json(c, &w);
}
