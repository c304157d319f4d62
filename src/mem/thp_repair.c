/* Huge pages put back after cow forks: passes over guest RAM in bounded steps. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util/clock.h"
#include "util/log.h"
#include "util/page.h"
#include "util/pagemap.h"
#include "mem/thp_repair.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

#define REGION (2ULL << 20)
#define REGION_PAGES (REGION / PAGE_4K)
#define BATCH 16 /* regions of pagemap read at once: 64 KiB */
#define MAX_WAIT_S 32

static bool repairable(const struct guest_mem *mem)
{
	return mem->backing == GUEST_MEM_ANON && mem->huge_advised && mem->host;
}

struct thp_repair *thp_repair_get(struct thp_repair **slot)
{
	return __atomic_load_n(slot, __ATOMIC_ACQUIRE);
}

void thp_repair_free(struct thp_repair *r)
{
	if (!r)
		return;
	pthread_mutex_destroy(&r->lock);
	free(r);
}

void thp_repair_mark(struct thp_repair **slot, const struct guest_mem *mem)
{
	struct thp_repair *r = thp_repair_get(slot);

	if (!repairable(mem))
		return;
	if (!r) {
		r = calloc(1, sizeof(*r));
		if (!r) {
			log_warn("no memory for the huge-page repair's state: none after this branch");
			return;
		}
		pthread_mutex_init(&r->lock, NULL);
		r->backoff_s = 1;
		__atomic_store_n(slot, r, __ATOMIC_RELEASE);
	}
	pthread_mutex_lock(&r->lock);
	r->pending = true;
	r->gen++;
	r->pass = (struct thp_pass){ 0 };
	r->backoff_s = 1;
	pthread_mutex_unlock(&r->lock);
}

bool thp_repair_wanted(struct thp_repair *r, const struct guest_mem *mem)
{
	if (!r)
		return false;
	pthread_mutex_lock(&r->lock);
	bool want = r->pending && !r->unavailable && repairable(mem);
	pthread_mutex_unlock(&r->lock);
	return want;
}

uint32_t thp_repair_next_wait_s(struct thp_repair *r)
{
	pthread_mutex_lock(&r->lock);
	uint32_t wait = r->backoff_s;
	if (r->backoff_s < MAX_WAIT_S)
		r->backoff_s *= 2;
	pthread_mutex_unlock(&r->lock);
	return wait;
}

void thp_repair_report(struct thp_repair *r, struct thp_repair_report *out)
{
	*out = (struct thp_repair_report){ 0 };
	if (!r)
		return;
	pthread_mutex_lock(&r->lock);
	*out = (struct thp_repair_report){ .pending = r->pending, .unavailable = r->unavailable,
					   .passes = r->passes, .pass_ns = r->pass_ns,
					   .last = r->last };
	memcpy(out->why, r->why, sizeof(out->why));
	pthread_mutex_unlock(&r->lock);
}

/* The region's 512 entries: present and this process's alone? Counts it either way. */
static bool region_exclusive(const uint64_t *pm, struct thp_repair_counts *c)
{
	bool shared = false;

	for (uint64_t i = 0; i < REGION_PAGES; i++) {
		if (!(pm[i] & PAGEMAP_PRESENT)) {
			c->sparse++;
			return false;
		}
		if (!(pm[i] & PAGEMAP_EXCLUSIVE))
			shared = true; /* keep looking: a hole counts first */
	}
	if (shared)
		c->shared++;
	return !shared;
}

static void give_up(struct thp_repair *r, int ret, const char *what)
{
	snprintf(r->why, sizeof(r->why), "%s: %s", what, strerror(-ret));
	r->unavailable = true;
	r->pending = false;
	log_info("huge-page repair off for this VMM: %s", r->why);
}

/* The first 2 MiB boundary inside guest RAM, and how many whole regions follow it. */
static uint64_t regions(const struct guest_mem *mem, uintptr_t *first)
{
	uintptr_t end = ((uintptr_t)mem->host + mem->map_size) & ~(uintptr_t)(REGION - 1);

	*first = ((uintptr_t)mem->host + REGION - 1) & ~(uintptr_t)(REGION - 1);
	return end > *first ? (end - *first) / REGION : 0;
}

/* One step of pass p, without the lock. 0, or -errno with *what naming the step. */
static int walk(struct thp_pass *p, const struct guest_mem *mem, uint64_t budget_ns,
		const char **what)
{
	static uint64_t pm[BATCH * REGION_PAGES]; /* the running step's (thp_repair.running) */
	uintptr_t first;
	uint64_t nregions = regions(mem, &first);
	uint64_t t0 = monotonic_ns(), deadline = t0 + budget_ns;
	int fd = pagemap_fd(), ret = 0;

	if (fd < 0) {
		*what = "opening /proc/self/pagemap";
		return fd;
	}
	while (p->cursor < nregions) {
		uint64_t n = nregions - p->cursor < BATCH ? nregions - p->cursor : BATCH;
		uintptr_t base = first + p->cursor * REGION;
		size_t want = n * REGION_PAGES * sizeof(uint64_t);
		ssize_t got = pread(fd, pm, want, (off_t)(base / PAGE_4K * sizeof(uint64_t)));
		if (got != (ssize_t)want) {
			*what = "reading /proc/self/pagemap";
			ret = got < 0 ? -errno : -EIO;
			goto out;
		}
		for (uint64_t i = 0; i < n; i++) {
			p->cursor++;
			if (region_exclusive(pm + i * REGION_PAGES, &p->counts)) {
				/* ~1 us when the region is huge already; a 2 MiB copy when not. */
				if (madvise((void *)(base + i * REGION), REGION, MADV_COLLAPSE) == 0) {
					p->counts.huge++;
				} else if (errno == EAGAIN || errno == ENOMEM || errno == EBUSY) {
					p->counts.failed++;
				} else {
					*what = "madvise(MADV_COLLAPSE) on guest RAM";
					ret = -errno;
					goto out;
				}
			}
			if (monotonic_ns() >= deadline)
				goto out;
		}
	}
out:
	p->spent_ns += monotonic_ns() - t0;
	return ret;
}

int thp_repair_step(struct thp_repair *r, const struct guest_mem *mem, uint64_t budget_ns)
{
	const char *what = "";
	struct thp_pass p;
	uintptr_t first;
	uint64_t gen, nregions = regions(mem, &first);
	int ret;

	pthread_mutex_lock(&r->lock);
	if (r->unavailable || r->running) {
		ret = r->unavailable ? -ENOTSUP : 1;
		pthread_mutex_unlock(&r->lock);
		return ret;
	}
	r->running = true;
	p = r->pass;
	gen = r->gen;
	pthread_mutex_unlock(&r->lock);

	ret = walk(&p, mem, budget_ns, &what);

	pthread_mutex_lock(&r->lock);
	r->running = false;
	if (ret < 0) {
		give_up(r, ret, what);
	} else if (gen != r->gen) {
		ret = 1; /* marked meanwhile: its new pass starts from the first region */
	} else if (p.cursor < nregions) {
		r->pass = p;
		ret = 1;
	} else {
		r->last = p.counts;
		r->pass_ns = p.spent_ns;
		r->passes++;
		r->pass = (struct thp_pass){ 0 };
		if (!r->last.shared && !r->last.failed)
			r->pending = false;
	}
	pthread_mutex_unlock(&r->lock);
	return ret;
}
