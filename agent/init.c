/* The work of PID 1: the kernel command line, mounts, hostname, network, and
 * ending the guest.
 *
 * Mounts: proc, sysfs, devtmpfs on /dev, devpts on /dev/pts, tmpfs on
 * /dev/shm, /run and /tmp (a mount that is already there is left as it is).
 * Ctrl+Alt+Del is turned into SIGINT to init (reboot(RB_DISABLE_CAD)), which
 * ends the guest gracefully (reaper.c), as Firecracker's SendCtrlAltDel asks.
 *
 * Network: lo up; eth0 (or the device named) from the kernel's
 * ip=<client>:<server>:<gw>:<netmask>:<hostname>:<device>:<autoconf>:<dns0>:<dns1>
 * or else from MMDS (mmds.c), with ioctls (no `ip` binary): address,
 * netmask, MTU, up, default route, and the name servers into /etc/resolv.conf.
 * The hostname: firec.hostname=, else ip='s, else MMDS's.
 *
 * Ending the guest: sync, then reboot(RB_AUTOBOOT). Firecracker has no power
 * off on x86 before ACPI; a reboot is what makes it exit (the i8042 reset, with
 * the kernel's reboot=k), and on aarch64 the PSCI reset does the same. In a PID
 * namespace the same call ends the namespace: its init is killed with SIGHUP.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"

void read_cmdline(const char *file)
{
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    g_cfg.cmdline[0] = '\0';
    if (fd < 0)
        return;
    ssize_t n = read(fd, g_cfg.cmdline, sizeof g_cfg.cmdline - 1);
    close(fd);
    g_cfg.cmdline[n > 0 ? n : 0] = '\0';
    for (char *p = g_cfg.cmdline; *p; p++)
        if (*p == '\n' || *p == '\t')
            *p = ' ';
}

const char *cmdline_arg(const char *key, char *out, size_t outlen)
{
    size_t klen = strlen(key);
    const char *found = NULL;
    for (const char *p = g_cfg.cmdline; *p;) {
        while (*p == ' ')
            p++;
        const char *end = strchr(p, ' ');
        if (!end)
            end = p + strlen(p);
        if ((size_t)(end - p) > klen && strncmp(p, key, klen) == 0 && p[klen] == '=') {
            size_t n = (size_t)(end - p) - klen - 1;
            if (n >= outlen)
                n = outlen - 1;
            memcpy(out, p + klen + 1, n);
            out[n] = '\0';
            found = out; /* the last one wins, as for the kernel's own arguments */
        }
        p = end;
    }
    return found;
}

static void mount_one(const char *src, const char *target, const char *type, unsigned long flags,
                      const char *data)
{
    if (mkdir(target, 0755) < 0 && errno != EEXIST)
        logmsg("cannot make %s: %s", target, strerror(errno));
    if (mount(src, target, type, flags, data) < 0 && errno != EBUSY)
        logmsg("cannot mount %s on %s: %s", type, target, strerror(errno));
}

static int if_flags_up(int s, const char *dev)
{
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", dev);
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        return -1;
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    return ioctl(s, SIOCSIFFLAGS, &ifr);
}

static int if_set(int s, unsigned long req, const char *dev, const char *dotted)
{
    struct ifreq ifr = {0};
    struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", dev);
    sin->sin_family = AF_INET;
    if (inet_pton(AF_INET, dotted, &sin->sin_addr) != 1) {
        errno = EINVAL;
        return -1;
    }
    return ioctl(s, req, &ifr);
}

int add_default_route(int s, const char *dev, struct in_addr gw)
{
    struct rtentry rt = {0};
    struct sockaddr_in *dst = (struct sockaddr_in *)&rt.rt_dst;
    struct sockaddr_in *mask = (struct sockaddr_in *)&rt.rt_genmask;
    struct sockaddr_in *via = (struct sockaddr_in *)&rt.rt_gateway;
    dst->sin_family = mask->sin_family = via->sin_family = AF_INET;
    via->sin_addr = gw;
    rt.rt_flags = RTF_UP | RTF_GATEWAY;
    rt.rt_dev = (char *)dev;
    return ioctl(s, SIOCADDRT, &rt) < 0 && errno != EEXIST ? -1 : 0;
}

static int default_route(int s, const char *dev, const char *gw)
{
    struct in_addr via;
    if (inet_pton(AF_INET, gw, &via) != 1) {
        errno = EINVAL;
        return -1;
    }
    return add_default_route(s, dev, via);
}

struct netconf {
    const char *dev, *address, *netmask, *gateway, *hostname, *mtu;
    char dns[256]; /* space-separated */
};

/* ip=<client>:<server>:<gw>:<netmask>:<hostname>:<device>:<autoconf>:<dns0>:<dns1>
 * into n (pointing into ip); 0 when it asks for a static address. */
static int from_ip_arg(char *ip, struct netconf *n)
{
    char *field[10] = {0}, *p = ip;
    for (int i = 0; i < 10 && p; i++) {
        field[i] = p;
        if ((p = strchr(p, ':')))
            *p++ = '\0';
    }
    n->dev = field[5] && *field[5] ? field[5] : "eth0";
    n->hostname = field[4];
    snprintf(n->dns, sizeof n->dns, "%s %s", field[7] ? field[7] : "", field[8] ? field[8] : "");
    if (!*field[0] || strchr(field[0], '.') == NULL) {
        if (strcmp(ip, "off") && strcmp(ip, "none"))
            logmsg("ip=%s: only a static address is supported; %s is left down", ip, n->dev);
        return -1;
    }
    n->address = field[0], n->gateway = field[2], n->netmask = field[3];
    return 0;
}

/* network.interfaces.eth0 of the MMDS document (firec.network's) into n. */
static int from_mmds(const struct jval *doc, struct netconf *n)
{
    static const char *const base[] = {"network", "interfaces", "eth0"};
    const char *keys[6];
    const char **v[] = {&n->address, &n->netmask, &n->gateway, &n->hostname, &n->mtu};
    static const char *const leaf[][2] = {{"ipv4", "address"}, {"ipv4", "netmask"},
                                          {"ipv4", "gateway"}, {"hostname", NULL},
                                          {"mtu", NULL}};
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        memcpy(keys, base, sizeof base);
        keys[3] = leaf[i][0], keys[4] = leaf[i][1], keys[5] = NULL;
        *v[i] = mmds_string(doc, keys);
    }
    keys[3] = "nameservers", keys[4] = NULL;
    const char *dns = mmds_string(doc, keys);
    snprintf(n->dns, sizeof n->dns, "%s", dns ? dns : "");
    n->dev = "eth0";
    return n->address ? 0 : -1;
}

static void apply(int s, const struct netconf *n)
{
    if (if_set(s, SIOCSIFADDR, n->dev, n->address) < 0 ||
        (n->netmask && *n->netmask && if_set(s, SIOCSIFNETMASK, n->dev, n->netmask) < 0) ||
        if_flags_up(s, n->dev) < 0) {
        logmsg("cannot configure %s as %s: %s", n->dev, n->address, strerror(errno));
        return;
    }
    if (n->mtu && *n->mtu) {
        struct ifreq ifr = {.ifr_mtu = atoi(n->mtu)};
        snprintf(ifr.ifr_name, IFNAMSIZ, "%s", n->dev);
        if (ioctl(s, SIOCSIFMTU, &ifr) < 0)
            logmsg("cannot set the MTU of %s to %s: %s", n->dev, n->mtu, strerror(errno));
    }
    if (n->gateway && *n->gateway && default_route(s, n->dev, n->gateway) < 0)
        logmsg("cannot add the default route via %s: %s", n->gateway, strerror(errno));
    char dns[256];
    snprintf(dns, sizeof dns, "%s", n->dns);
    FILE *f = NULL;
    for (char *save, *ns = strtok_r(dns, " ", &save); ns; ns = strtok_r(NULL, " ", &save))
        if (f || (f = fopen("/etc/resolv.conf", "we")))
            fprintf(f, "nameserver %s\n", ns);
    if (f)
        fclose(f);
}

void init_system(void)
{
    mount_one("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    mount_one("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    mount_one("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
    mount_one("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
              "newinstance,ptmxmode=0666,mode=0620");
    mount_one("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    mount_one("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
    mount_one("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    reboot(RB_DISABLE_CAD); /* Ctrl+Alt+Del: SIGINT to us, not a reset (refused in a PID ns) */
}

void init_network(void)
{
    char hostname[256] = "", ip[512], mmds_arg[128];
    struct netconf n = {0};
    struct arena *a = NULL;
    struct jval *doc = NULL;
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        logmsg("no IPv4 socket, no network: %s", strerror(errno));
        return;
    }
    if (if_flags_up(s, "lo") < 0)
        logmsg("cannot bring up lo: %s", strerror(errno));
    cmdline_arg("firec.hostname", hostname, sizeof hostname);
    if (cmdline_arg("firec.mmds", mmds_arg, sizeof mmds_arg) && (a = arena_new())) {
        struct ifreq ifr = {0};
        snprintf(ifr.ifr_name, IFNAMSIZ, "eth0");
        int temporary = ioctl(s, SIOCGIFADDR, &ifr) < 0 &&
                        if_set(s, SIOCSIFADDR, "eth0", "169.254.0.2") == 0 &&
                        if_set(s, SIOCSIFNETMASK, "eth0", "255.255.0.0") == 0;
        if_flags_up(s, "eth0");
        doc = mmds_document(a, mmds_arg);
        if (temporary)
            if_set(s, SIOCSIFADDR, "eth0", "0.0.0.0"); /* gone again */
    }
    int configured = cmdline_arg("ip", ip, sizeof ip) ? from_ip_arg(ip, &n) : -1;
    if (configured < 0 && doc) {
        memset(&n, 0, sizeof n);
        configured = from_mmds(doc, &n);
    }
    if (configured == 0)
        apply(s, &n);
    close(s);
    static const char *const mmds_host[] = {"firec", "hostname", NULL};
    static const char *const mmds_token[] = {"firec", "agent_token", NULL};
    const char *name = hostname[0] ? hostname
                       : n.hostname && *n.hostname ? n.hostname
                                                   : mmds_string(doc, mmds_host);
    if (name && *name && sethostname(name, strlen(name)) < 0)
        logmsg("cannot set the hostname to %s: %s", name, strerror(errno));
    const char *token = mmds_string(doc, mmds_token);
    if (!g_cfg.token[0] && token)
        snprintf(g_cfg.token, sizeof g_cfg.token, "%s", token);
    arena_free(a);
}

void shutdown_system(void)
{
    logmsg("syncing and ending the guest");
    sync();
    reboot(RB_AUTOBOOT);
    logmsg("reboot failed: %s", strerror(errno));
    _exit(1);
}
