/* Page-server fault service: read uffd events, COPY/ZEROPAGE runs, races, REMOVE/UNMAP. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "util/log.h"
#include "uffd/ps_server.h"
#include "util/clock.h"

#define PS_MAX_EAGAIN 64

/* Read every pending event into the VM's queue; -errno when the uffd is unusable. */
static int read_events(struct ps_vm *vm)
{
	for (;;) {
		if (vm->qcap - vm->qlen < 64) {
			size_t cap = vm->qcap ? vm->qcap * 2 : 128;
			struct uffd_msg *q = realloc(vm->q, cap * sizeof(*q));
			if (!q)
				return -ENOMEM;
			vm->q = q;
			vm->qcap = cap;
		}
		ssize_t n = read(vm->uffd, vm->q + vm->qlen, 64 * sizeof(struct uffd_msg));
		if (n < 0)
			return errno == EAGAIN ? 0 : -errno;
		if (n == 0)
			return -EPIPE;
		vm->qlen += (size_t)n / sizeof(struct uffd_msg);
	}
}

/* Non-cooperative events change the mapping: handle them at once (EAGAIN waits for them). */
static void handle_noncoop(struct ps_server *s, struct ps_vm *vm, struct uffd_msg *m)
{
	uint64_t start, end;
	uint8_t event = m->event;

	m->event = 0; /* handled, whatever happens below */
	if (event == UFFD_EVENT_UNMAP) {
		vm->events_unmap++;
		ps_vm_drop(s, vm, "guest RAM unmapped by the VMM");
	} else if (event == UFFD_EVENT_REMOVE) {
		/* Discarded pages read as zeroes from now on, never as snapshot data again. */
		vm->events_remove++;
		start = m->arg.remove.start < vm->reg.base ? 0 : (m->arg.remove.start - vm->reg.base) / 4096;
		end = m->arg.remove.end <= vm->reg.base ? 0 : (m->arg.remove.end - vm->reg.base + 4095) / 4096;
		for (uint64_t p = start; p < end && p < vm->npages; p++) {
			ps_set_bit(vm->discarded, p);
			vm->present[p / 8] &= (uint8_t)~(1u << (p % 8));
		}
	}
}

/* Wake threads waiting on a page someone else installed; failing here only costs a retry. */
static void wake(struct ps_vm *vm, uint64_t addr)
{
	if (ioctl(vm->uffd, UFFDIO_WAKE, &(struct uffdio_range){ addr, 4096 }) < 0)
		log_debug("vm %d: UFFDIO_WAKE 0x%llx: %s", vm->id, (unsigned long long)addr,
			  strerror(errno));
}

static void mark_present(struct ps_vm *vm, uint64_t page, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		ps_set_bit(vm->present, page + i);
}

int ps_vm_fill(struct ps_server *s, struct ps_vm *vm, uint64_t page, uint64_t n, bool demand)
{
	bool zero = !ps_bit(vm->snap->data, page) || ps_bit(vm->discarded, page);
	uint64_t dst = vm->reg.base + page * 4096, len = n * 4096;
	int tries = 0;

	for (;;) {
		int64_t done;
		int r;
		if (zero) {
			struct uffdio_zeropage z = { .range = { dst, len } };
			r = ioctl(vm->uffd, UFFDIO_ZEROPAGE, &z);
			done = z.zeropage;
		} else {
			struct uffdio_copy c = { .dst = dst, .src = (uint64_t)(uintptr_t)(vm->snap->map + page * 4096),
						 .len = len };
			r = ioctl(vm->uffd, UFFDIO_COPY, &c);
			done = c.copy;
		}
		if (r == 0) {
			mark_present(vm, page, n);
			vm->bytes_copied += zero ? 0 : len;
			return 0;
		}
		int e = errno;
		if (done > 0) { /* partial: keep what went in, retry the rest */
			mark_present(vm, page, (uint64_t)done / 4096);
			vm->bytes_copied += zero ? 0 : (uint64_t)done;
			page += (uint64_t)done / 4096;
			n -= (uint64_t)done / 4096;
			dst += (uint64_t)done;
			len -= (uint64_t)done;
		}
		if (e == EEXIST) {
			/* Someone else installed the first page: present is success; go on after it. */
			vm->eexist++;
			mark_present(vm, page, 1);
			if (demand)
				wake(vm, dst);
			if (n <= 1)
				return 0;
			page++, n--, dst += 4096, len -= 4096;
			continue;
		}
		if (e == EAGAIN && ++tries < PS_MAX_EAGAIN) {
			/* The mapping is changing: read the pending events, then retry. */
			vm->eagain++;
			size_t from = vm->qlen;
			if (read_events(vm) < 0)
				return -EAGAIN;
			for (size_t i = from; i < vm->qlen && !vm->gone; i++)
				if (vm->q[i].event && vm->q[i].event != UFFD_EVENT_PAGEFAULT)
					handle_noncoop(s, vm, &vm->q[i]);
			if (vm->gone)
				return -ESRCH;
			zero = !ps_bit(vm->snap->data, page) || ps_bit(vm->discarded, page);
			continue;
		}
		return -e;
	}
}

/* A run for a demand fault: holes alone, data with up to fault_around missing neighbours. */
static uint64_t demand_run(struct ps_server *s, struct ps_vm *vm, uint64_t page)
{
	bool hole = !ps_bit(vm->snap->data, page) || ps_bit(vm->discarded, page);
	uint64_t n = 1, max = vm->recording ? 1 : s->fault_around;

	while (n < max && page + n < vm->npages && !ps_bit(vm->present, page + n) &&
	       !ps_bit(vm->discarded, page + n) && ps_bit(vm->snap->data, page + n) == !hole)
		n++;
	return n;
}

void ps_vm_uffd_ready(struct ps_server *s, struct ps_vm *vm)
{
	int ret = read_events(vm);

	for (size_t i = 0; i < vm->qlen && !vm->gone; i++) {
		struct uffd_msg *m = &vm->q[i];
		if (m->event == 0)
			continue; /* handled during an EAGAIN retry */
		if (m->event != UFFD_EVENT_PAGEFAULT) {
			handle_noncoop(s, vm, m);
			continue;
		}
		uint64_t addr = m->arg.pagefault.address & ~4095ULL;
		if (addr < vm->reg.base || addr - vm->reg.base >= vm->reg.size) {
			log_warn("vm %d: fault at 0x%llx outside guest RAM", vm->id,
				 (unsigned long long)addr);
			continue;
		}
		uint64_t page = (addr - vm->reg.base) / 4096;
		if (ps_bit(vm->present, page)) {
			/* Prefetch got there first; make sure the faulting thread runs again. */
			wake(vm, addr);
			continue;
		}
		if (!vm->demand_faults++)
			vm->t_first_fault = monotonic_ns();
		if (!ps_bit(vm->snap->data, page))
			vm->zero_faults++;
		if (vm->recording)
			ps_record_page(vm, page);
		int r = ps_vm_fill(s, vm, page, demand_run(s, vm, page), true);
		if (r && !vm->gone) {
			char why[96];
			snprintf(why, sizeof(why), "serving page %llu failed: %s (the VM is gone?)",
				 (unsigned long long)page, strerror(-r));
			ps_vm_drop(s, vm, why);
		}
	}
	if (!vm->gone)
		vm->qlen = 0;
	if (ret < 0 && !vm->gone)
		ps_vm_drop(s, vm, ret == -EPIPE ? "uffd closed" : "reading the uffd failed");
}
