/* Loaded into the tests' Chromium (LD_PRELOAD): its NETLINK_ROUTE socket fails, so
 * Chromium's AddressTrackerLinux takes its "assume always online" path and stops
 * watching this host's interfaces. The sandboxes of a parallel test run create and
 * remove Docker bridges and veths all the time; Chromium took each for a network
 * change and failed the requests in flight with net::ERR_NETWORK_CHANGED (CI at
 * d25b90c: a UI page's goto; earlier, a UI left blank when its first API call
 * failed). The UI and API are on 127.0.0.1: no interface change concerns them. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sys/socket.h>
#include <linux/netlink.h>

int socket(int domain, int type, int protocol) {
    static int (*real)(int, int, int);
    if (domain == AF_NETLINK && protocol == NETLINK_ROUTE) {
        errno = EAFNOSUPPORT;
        return -1;
    }
    if (!real)
        real = (int (*)(int, int, int))dlsym(RTLD_NEXT, "socket");
    return real(domain, type, protocol);
}
