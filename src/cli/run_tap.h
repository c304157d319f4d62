/* `forkvm run --tap IFNAME [--mac MAC]`: the NIC on a TAP of this network namespace
 * (docs/NET.md, "Device"). */
#ifndef FORKVM_CLI_RUN_TAP_H
#define FORKVM_CLI_RUN_TAP_H

#include <stdbool.h>
#include <stdint.h>

struct cli_command;
struct run_opts;

/* Ids from RUN_TAP_OPT_BASE: between the networking options' (2500) and the jail's (3000). */
#define RUN_TAP_OPT_BASE 2600
enum { RUN_OPT_TAP = RUN_TAP_OPT_BASE, RUN_OPT_MAC };
#define RUN_TAP_OPTIONS                                                  \
	{ "tap", required_argument, NULL, RUN_OPT_TAP },                 \
	{ "mac", required_argument, NULL, RUN_OPT_MAC }
#define RUN_TAP_USAGE                                                                         \
	"  --tap IFNAME         a virtio-net NIC on TAP device IFNAME of this network namespace\n" \
	"                       (created if missing; IFF_VNET_HDR); with --restore, the NIC of\n" \
	"                       the snapshot goes on it (docs/NET.md)\n"                        \
	"  --mac MAC            the NIC's MAC, XX:XX:XX:XX:XX:XX (default: a random locally\n"  \
	"                       administered 02:xx:xx:xx:xx:xx; a restore keeps the snapshot's)\n"

struct run_tap_opts {
	const char *ifname;	/* --tap */
	bool mac_set;		/* --mac */
	uint8_t mac[6];
};

/* One option; 0 or a CLI exit code after the usage error. */
int run_tap_opt(const struct cli_command *self, int opt, const char *arg, struct run_opts *o);
/* After parsing: open the TAP (TUNSETIFF IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, non-blocking)
 * and fill o->vm.net; 0 or a CLI exit code. */
int run_tap_finish(const struct cli_command *self, struct run_opts *o);
/* "XX:XX:XX:XX:XX:XX" → a unicast MAC; -EINVAL otherwise. */
int run_tap_parse_mac(const char *s, uint8_t mac[6]);
/* A random MAC 02:xx:xx:xx:xx:xx (locally administered, unicast). */
void run_tap_random_mac(uint8_t mac[6]);

#endif
