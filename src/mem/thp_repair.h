/*
 * Huge pages put back after cow forks. While a cow branch's template or children share the
 * source's RAM, each write of the source to a 2 MiB huge page splits it into 512 page-table
 * entries and copies 4 KiB; the entries stay after the sharers are gone, and every later
 * fork() copies them: a source of 256 MiB whose huge pages were all split pauses 3-4 ms per
 * branch instead of 0.7 (docs/PERFORMANCE.md, "The pause window"). A pass collapses each
 * 2 MiB region of guest RAM that is fully present and mapped by this process alone
 * (MADV_COLLAPSE, Linux 6.1); a region another process still shares is left alone, so a
 * pass never copies memory a branch shares.
 */
#ifndef FORKVM_MEM_THP_REPAIR_H
#define FORKVM_MEM_THP_REPAIR_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "mem/guest_mem.h"

/* What one pass over the RAM's 2 MiB regions found. */
struct thp_repair_counts {
	uint32_t huge;	 /* mapped by this process alone: collapsed, or huge already */
	uint32_t shared; /* another process maps one of its pages: left alone */
	uint32_t sparse; /* a page not present: left alone (collapsing would allocate it) */
	uint32_t failed; /* MADV_COLLAPSE refused for now (EAGAIN, ENOMEM, EBUSY) */
};

/* Where a pass stands: it runs in bounded steps. */
struct thp_pass {
	uint64_t cursor;	/* next region */
	uint64_t spent_ns;
	struct thp_repair_counts counts;
};

struct thp_repair {
	/* Held for moments only, never across a collapse: status reads under it. The branch
	 * worker and the control thread both run steps, one at a time (running). */
	pthread_mutex_t lock;
	bool running;
	bool pending;	  /* a cow fork since the last pass that left nothing to do */
	bool unavailable; /* this kernel or process cannot: why says so */
	char why[128];
	uint64_t gen;	  /* bumped by each mark: a step begun before it is void */
	struct thp_pass pass;	       /* the pass in progress */
	struct thp_repair_counts last; /* the last finished pass */
	uint64_t passes;
	uint64_t pass_ns;   /* time spent in the last finished pass */
	uint32_t backoff_s; /* next wait between passes while sharers remain */
};

/*
 * A cow fork of this RAM happened: it is shared, and later writes split huge pages. Starts a
 * new pass, if the RAM is anonymous on advised huge pages (else there is nothing to repair).
 * The state is allocated here on first use and published in *slot (only a VMM that forks
 * carries it: a cow child that never branches adds nothing to its private memory).
 */
void thp_repair_mark(struct thp_repair **slot, const struct guest_mem *mem);
/* The state *slot published, or NULL (no cow fork yet). Any thread. */
struct thp_repair *thp_repair_get(struct thp_repair **slot);
void thp_repair_free(struct thp_repair *r);
/* Whether a pass is worth running for this RAM (anonymous, huge pages advised, marked);
 * false when r is NULL. */
bool thp_repair_wanted(struct thp_repair *r, const struct guest_mem *mem);
/*
 * Work on the pass for up to budget_ns (at least one region). Returns 1 when the pass is
 * not finished (or another thread's step runs), 0 when it is (r->last holds its counts;
 * pending cleared when no region was shared or failed), -errno when the process cannot
 * (r->why says why; logged once).
 */
int thp_repair_step(struct thp_repair *r, const struct guest_mem *mem, uint64_t budget_ns);
/* A consistent copy of the state, for the status reply (all zero when r is NULL). */
struct thp_repair_report {
	bool pending, unavailable;
	char why[128];
	uint64_t passes, pass_ns;
	struct thp_repair_counts last;
};
void thp_repair_report(struct thp_repair *r, struct thp_repair_report *out);
/* Seconds to wait before the next pass while sharers remain: 1, 2, 4 ... 32. */
uint32_t thp_repair_next_wait_s(struct thp_repair *r);

#endif
