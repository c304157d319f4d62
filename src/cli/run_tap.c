/* `forkvm run --tap IFNAME --mac MAC`: open a TAP for the NIC in the current network namespace. */
#include "cli/run_tap.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "cli/run_opts.h"

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int run_tap_parse_mac(const char *s, uint8_t mac[6])
{
	if (strlen(s) != 17)
		return -EINVAL;
	for (int i = 0; i < 6; i++) {
		int hi = hexval(s[i * 3]), lo = hexval(s[i * 3 + 1]);

		if (hi < 0 || lo < 0 || (i < 5 && s[i * 3 + 2] != ':'))
			return -EINVAL;
		mac[i] = (uint8_t)(hi << 4 | lo);
	}
	if ((mac[0] & 1) || !(mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5]))
		return -EINVAL; /* multicast or all zero: not a NIC's address */
	return 0;
}

void run_tap_random_mac(uint8_t mac[6])
{
	if (getrandom(mac + 1, 5, 0) != 5) {
		/* Only if the kernel's pool fails: still distinct per process and time. */
		uint64_t x = (uint64_t)getpid() * 0x9E3779B97F4A7C15ULL ^ (uint64_t)time(NULL);
		memcpy(mac + 1, &x, 5);
	}
	mac[0] = 0x02; /* locally administered, unicast */
}

int run_tap_opt(const struct cli_command *self, int opt, const char *arg, struct run_opts *o)
{
	switch (opt) {
	case RUN_OPT_TAP:
		if (!*arg || strlen(arg) >= IFNAMSIZ || strchr(arg, '/') || strchr(arg, ' '))
			return cli_usage_error(self, "--tap '%s': need an interface name of 1-%d characters",
					       arg, IFNAMSIZ - 1);
		o->tap.ifname = arg;
		return 0;
	case RUN_OPT_MAC:
		if (run_tap_parse_mac(arg, o->tap.mac))
			return cli_usage_error(self, "--mac '%s': need a unicast MAC, XX:XX:XX:XX:XX:XX", arg);
		o->tap.mac_set = true;
		return 0;
	default:
		return cli_usage_error(self, "unknown option");
	}
}

/* TUNSETIFF on /dev/net/tun: the TAP named ifname (made if missing), vnet headers, no packet
 * info, non-blocking, close-on-exec; -errno with the reason printed. */
static int tap_open(const char *ifname)
{
	struct ifreq ifr;
	int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC), err;

	if (fd < 0) {
		err = -errno;
		fprintf(stderr, "forkvm run: --tap %s: opening /dev/net/tun: %s\n", ifname, strerror(-err));
		return err;
	}
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		err = -errno;
		fprintf(stderr, "forkvm run: --tap %s: TUNSETIFF: %s (a TUN device, a multi-queue TAP, "
			"one in use, or no CAP_NET_ADMIN?)\n", ifname, strerror(-err));
		close(fd);
		return err;
	}
	return fd;
}

int run_tap_finish(const struct cli_command *self, struct run_opts *o)
{
	int fd;

	if (o->restore && o->tap.mac_set)
		return cli_usage_error(self, "--mac comes from the snapshot with --restore");
	if (!o->tap.ifname) {
		if (o->tap.mac_set && !o->vm.net.present && o->net.mode == NET_NONE)
			return cli_usage_error(self, "--mac needs a NIC (--tap IFNAME or --net)");
		if (o->tap.mac_set)
			memcpy(o->vm.net.mac, o->tap.mac, sizeof(o->vm.net.mac));
		return 0;
	}
	if (o->vm.net.present || o->net.mode != NET_NONE)
		return cli_usage_error(self, "--tap and --net both give the NIC a network; pick one");
	fd = tap_open(o->tap.ifname);
	if (fd < 0)
		return CLI_EXIT_FAIL;
	o->vm.net.present = true;
	o->vm.net.tap_fd = fd;
	if (o->tap.mac_set)
		memcpy(o->vm.net.mac, o->tap.mac, sizeof(o->vm.net.mac));
	else
		run_tap_random_mac(o->vm.net.mac);
	return 0;
}
