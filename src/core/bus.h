/* Port-IO and MMIO dispatch: devices claim address ranges, vCPU exits are routed to them. */
#ifndef FORKVM_BUS_H
#define FORKVM_BUS_H

#include <stdbool.h>
#include <stdint.h>

struct vcpu;

/* A handler returns 0, BUS_WAIT (the vCPU idles until woken), or a negative errno. */
#define BUS_WAIT 1

typedef int (*bus_access_fn)(void *opaque, struct vcpu *vcpu, uint64_t offset, void *data,
			     int len, bool is_write);

struct bus_dev {
	const char *name;
	uint64_t base, len;
	void *opaque;
	bus_access_fn access;
};

#define BUS_MAX_DEVS 32

struct io_bus {
	const char *name; /* "pio" or "mmio", for messages */
	int ndevs;
	struct bus_dev devs[BUS_MAX_DEVS];
	uint64_t unhandled; /* accesses no device claimed */
};

int bus_register(struct io_bus *bus, const struct bus_dev *dev);
const struct bus_dev *bus_find(const struct io_bus *bus, uint64_t addr, int len);
/* Route one access; unclaimed reads return all-ones, unclaimed writes are dropped. */
int bus_dispatch(struct io_bus *bus, struct vcpu *vcpu, uint64_t addr, void *data, int len,
		 bool is_write);

#endif
