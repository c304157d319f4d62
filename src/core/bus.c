/* Address-range device bus shared by port IO and MMIO. */
#include "core/bus.h"

#include <string.h>

#include "util/log.h"

int bus_register(struct io_bus *bus, const struct bus_dev *dev)
{
	if (dev->len == 0 || dev->base + dev->len < dev->base)
		return log_errno(-EINVAL, "%s bus: device %s has an empty or wrapping range", bus->name,
				 dev->name);
	for (int i = 0; i < bus->ndevs; i++) {
		const struct bus_dev *d = &bus->devs[i];
		if (dev->base < d->base + d->len && d->base < dev->base + dev->len)
			return log_errno(-EBUSY, "%s bus: device %s at 0x%llx overlaps %s", bus->name,
					 dev->name, (unsigned long long)dev->base, d->name);
	}
	if (bus->ndevs == BUS_MAX_DEVS)
		return log_errno(-ENOSPC, "%s bus: no room for device %s", bus->name, dev->name);
	bus->devs[bus->ndevs++] = *dev;
	return 0;
}

const struct bus_dev *bus_find(const struct io_bus *bus, uint64_t addr, int len)
{
	for (int i = 0; i < bus->ndevs; i++) {
		const struct bus_dev *d = &bus->devs[i];
		/* The access must start inside the device; wide port accesses may run past it. */
		if (addr >= d->base && addr - d->base < d->len)
			return d;
	}
	return NULL;
}

int bus_dispatch(struct io_bus *bus, struct vcpu *vcpu, uint64_t addr, void *data, int len,
		 bool is_write)
{
	const struct bus_dev *d = bus_find(bus, addr, len);

	if (!d) {
		if (bus->unhandled++ < 16)
			log_debug("%s bus: unclaimed %s of %d bytes at 0x%llx", bus->name,
				  is_write ? "write" : "read", len, (unsigned long long)addr);
		if (!is_write)
			memset(data, 0xff, (size_t)len);
		return 0;
	}
	return d->access(d->opaque, vcpu, addr - d->base, data, len, is_write);
}
