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
 * with ioctls (no `ip` binary): address, netmask, up, default route, and the
 * name servers into /etc/resolv.conf.
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

static int default_route(int s, const char *dev, const char *gw)
{
    struct rtentry rt = {0};
    struct sockaddr_in *dst = (struct sockaddr_in *)&rt.rt_dst;
    struct sockaddr_in *mask = (struct sockaddr_in *)&rt.rt_genmask;
    struct sockaddr_in *via = (struct sockaddr_in *)&rt.rt_gateway;
    dst->sin_family = mask->sin_family = via->sin_family = AF_INET;
    if (inet_pton(AF_INET, gw, &via->sin_addr) != 1) {
        errno = EINVAL;
        return -1;
    }
    rt.rt_flags = RTF_UP | RTF_GATEWAY;
    rt.rt_dev = (char *)dev;
    return ioctl(s, SIOCADDRT, &rt) < 0 && errno != EEXIST ? -1 : 0;
}

/* ip=<client>:<server>:<gw>:<netmask>:<hostname>:<device>:<autoconf>:<dns0>:<dns1> */
static void network(char *hostname, size_t hostlen)
{
    char ip[512], *field[10] = {0};
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        logmsg("no IPv4 socket, no network: %s", strerror(errno));
        return;
    }
    if (if_flags_up(s, "lo") < 0)
        logmsg("cannot bring up lo: %s", strerror(errno));
    if (cmdline_arg("ip", ip, sizeof ip)) {
        char *p = ip;
        for (int i = 0; i < 10 && p; i++) {
            field[i] = p;
            if ((p = strchr(p, ':')))
                *p++ = '\0';
        }
        const char *dev = field[5] && *field[5] ? field[5] : "eth0";
        if (field[4] && *field[4] && !hostname[0])
            snprintf(hostname, hostlen, "%s", field[4]);
        if (!*field[0] || strchr(field[0], '.') == NULL) {
            if (strcmp(ip, "off") && strcmp(ip, "none"))
                logmsg("ip=%s: only a static address is supported; %s is left down", ip, dev);
        } else if (if_set(s, SIOCSIFADDR, dev, field[0]) < 0 ||
                   (field[3] && *field[3] && if_set(s, SIOCSIFNETMASK, dev, field[3]) < 0) ||
                   if_flags_up(s, dev) < 0) {
            logmsg("cannot configure %s as %s: %s", dev, field[0], strerror(errno));
        } else if (field[2] && *field[2] && default_route(s, dev, field[2]) < 0) {
            logmsg("cannot add the default route via %s: %s", field[2], strerror(errno));
        }
        int dns = (field[7] && *field[7]) || (field[8] && *field[8]);
        FILE *f = dns ? fopen("/etc/resolv.conf", "we") : NULL;
        for (int i = 7; f && i < 9; i++)
            if (field[i] && *field[i])
                fprintf(f, "nameserver %s\n", field[i]);
        if (f)
            fclose(f);
    }
    close(s);
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
    char hostname[256] = "";
    cmdline_arg("firec.hostname", hostname, sizeof hostname);
    network(hostname, sizeof hostname);
    if (hostname[0] && sethostname(hostname, strlen(hostname)) < 0)
        logmsg("cannot set the hostname to %s: %s", hostname, strerror(errno));
}

void shutdown_system(void)
{
    logmsg("syncing and ending the guest");
    sync();
    reboot(RB_AUTOBOOT);
    logmsg("reboot failed: %s", strerror(errno));
    _exit(1);
}
