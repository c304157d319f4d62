/* The guest's IPv4 configuration: from the kernel command line at boot, and the net_config op. */
#ifndef FORKVM_AGENT_NET_H
#define FORKVM_AGENT_NET_H

#include "agent.h"

#include <stdbool.h>
#include <stdint.h>

struct net_request {
	const char *interface;	/* default "eth0" */
	uint32_t addr;		/* host byte order */
	int prefix;		/* 0 … 32 */
	uint32_t gateway;	/* 0: no default route change */
	bool has_gateway;
	int mtu;		/* 0: unchanged */
};

/*
 * Parse "A.B.C.D/P" (and the gateway "A.B.C.D") into r. -EINVAL with e naming the field.
 * Pure: unit tested and fuzzed with the request parser.
 */
int net_parse_cidr(const char *text, uint32_t *addr, int *prefix);
int net_parse_addr(const char *text, uint32_t *addr);

/* Bring lo and the interface up with the address, MTU and default route. -errno with e set. */
int net_apply(const struct net_request *r, struct fvm_err *e);

/*
 * At boot: "forkvm.net=ADDR/PREFIX[,GATEWAY[,MTU]]" on /proc/cmdline configures eth0 (the
 * VMM's NIC), waiting up to 2 s for the driver to create it. Absent: nothing. A failure is
 * logged, never fatal (the agent stays reachable over vsock).
 */
void net_boot_config(void);

#endif
