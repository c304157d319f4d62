/* The agent's memory budget (shared by all connection processes) and RLIMIT_AS backstop. */
#include "mem.h"
#include "io.h"
#include "log.h"

#include <errno.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>

/* ASan reserves terabytes of shadow address space: no RLIMIT_AS under it. */
#if defined(__SANITIZE_ADDRESS__)
#define MEM_NO_RLIMIT 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MEM_NO_RLIMIT 1
#endif
#endif

/* How often a waiting request looks at the budget again. */
#define MEM_POLL_MS 10
/* Large buffers come straight from mmap and go back at free (glibc would otherwise raise
 * this threshold after the first large free and keep later buffers in the heap). */
#define MEM_MMAP_THRESHOLD (64 << 10)
#define MEM_TRIM_THRESHOLD (256 << 10)

/* Shared by the listener and every connection process (MAP_SHARED, made before fork). */
struct mem_table {
	pthread_mutex_t lock;	/* robust: a connection killed inside it cannot wedge it */
	size_t limit;
	unsigned int slots;
	size_t held[];		/* bytes each connection slot holds */
};

static struct mem_table *tab;
static unsigned int wait_ms;
static unsigned int my_slot;	/* in a connection process */
static size_t my_held;
static struct rlimit orig_as;	/* the agent's own RLIMIT_AS, for the commands it runs */
static bool have_orig_as;

static double mib(size_t bytes)
{
	return (double)bytes / (1 << 20);
}

static int tab_lock(void)
{
	int err = pthread_mutex_lock(&tab->lock);

	/* The holder died mid-update: each held[] entry is one store, so the table is whole. */
	if (err == EOWNERDEAD)
		err = pthread_mutex_consistent(&tab->lock);
	return -err;
}

static void tab_unlock(void)
{
	pthread_mutex_unlock(&tab->lock);
}

int mem_setup(const struct agent_config *cfg)
{
	size_t size = sizeof(*tab) + (size_t)cfg->max_conns * sizeof(tab->held[0]);
	pthread_mutexattr_t attr;
	void *map;
	int err;

#ifndef MEM_NO_RLIMIT /* ASan's allocator has no mallopt (it always fails there) */
	if (!mallopt(M_MMAP_THRESHOLD, MEM_MMAP_THRESHOLD) ||
	    !mallopt(M_TRIM_THRESHOLD, MEM_TRIM_THRESHOLD))
		log_warn("mallopt failed: freed memory may stay in the agent's per-connection "
			 "processes");
#endif
	if (getrlimit(RLIMIT_AS, &orig_as) < 0)
		log_errno(-errno, "getrlimit RLIMIT_AS");
	else
		have_orig_as = true;
	wait_ms = cfg->mem_wait_ms;
	map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (map == MAP_FAILED)
		return log_errno(-errno, "map the memory budget table (%zu bytes)", size);
	tab = map;
	tab->limit = cfg->mem_budget;
	tab->slots = cfg->max_conns;
	err = pthread_mutexattr_init(&attr);
	if (!err)
		err = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
	if (!err)
		err = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
	if (!err)
		err = pthread_mutex_init(&tab->lock, &attr);
	pthread_mutexattr_destroy(&attr);
	if (err) {
		munmap(map, size);
		tab = NULL;
		return log_errno(-err, "initialise the memory budget lock");
	}
	return 0;
}

void mem_slot_clear(unsigned int slot)
{
	if (!tab || slot >= tab->slots || tab_lock() < 0)
		return;
	tab->held[slot] = 0;
	tab_unlock();
}

void mem_conn_enter(unsigned int slot)
{
	my_slot = slot;
	my_held = 0;
#ifndef MEM_NO_RLIMIT
	if (tab && have_orig_as) {
		struct rlimit lim = orig_as;
		rlim_t want = (rlim_t)tab->limit + AGENT_CONN_SLACK;

		/* Only ever lower the soft limit: the hard one stays, so children get theirs back. */
		if (lim.rlim_cur == RLIM_INFINITY || lim.rlim_cur > want)
			lim.rlim_cur = want;
		if (lim.rlim_max != RLIM_INFINITY && lim.rlim_cur > lim.rlim_max)
			lim.rlim_cur = lim.rlim_max;
		if (setrlimit(RLIMIT_AS, &lim) < 0)
			log_errno(-errno, "set RLIMIT_AS of connection process to %llu bytes",
				  (unsigned long long)lim.rlim_cur);
	}
#endif
}

int mem_child_restore(void)
{
#ifndef MEM_NO_RLIMIT
	if (tab && have_orig_as && setrlimit(RLIMIT_AS, &orig_as) < 0)
		return -errno;
#endif
	return 0;
}

/* Try once under the lock; *others gets what the other slots hold. */
static bool try_take(size_t bytes, size_t *others)
{
	size_t sum = 0;
	bool ok;

	if (tab_lock() < 0) {
		*others = 0;
		return true; /* a broken lock must not stop the agent: run unbounded */
	}
	for (unsigned int i = 0; i < tab->slots; i++)
		if (i != my_slot)
			sum += tab->held[i];
	ok = sum <= tab->limit && bytes <= tab->limit - sum;
	if (ok)
		tab->held[my_slot] = bytes;
	tab_unlock();
	*others = sum;
	return ok;
}

int mem_reserve(size_t bytes, int conn_fd, struct fvm_err *e)
{
	uint64_t start = io_now_ms();
	size_t others;

	if (!tab || bytes <= my_held)
		return 0;
	if (bytes > tab->limit)
		return errmsg(e, -E2BIG,
				  "this request needs %.1f MiB of agent memory, more than the agent's "
				  "whole budget of %.1f MiB (--mem-budget)", mib(bytes), mib(tab->limit));
	for (;;) {
		struct pollfd p = { .fd = conn_fd, .events = 0 };

		if (try_take(bytes, &others)) {
			my_held = bytes;
			return 0;
		}
		/* Holding part of the budget while waiting for more could deadlock with another
		 * connection doing the same: only a request that holds nothing waits. */
		if (my_held || io_now_ms() - start >= wait_ms)
			return errmsg(e, -EBUSY,
					  "agent memory budget busy: this request needs %.1f MiB and other "
					  "connections hold %.1f of %.1f MiB (waited %llu ms); retry later",
					  mib(bytes), mib(others), mib(tab->limit),
					  (unsigned long long)(io_now_ms() - start));
		if (poll(&p, 1, MEM_POLL_MS) > 0 && (p.revents & (POLLHUP | POLLERR)))
			return errmsg(e, -ECONNRESET,
				      "client hung up while waiting for agent memory");
	}
}

void mem_release(void)
{
	if (!tab || !my_held)
		return;
	if (tab_lock() == 0) {
		tab->held[my_slot] = 0;
		tab_unlock();
	}
	my_held = 0;
	/* Small freed blocks (parsed values) sit in the heap: hand the pages back. */
	malloc_trim(0);
}

size_t mem_frame_cost(size_t len)
{
	size_t values = len / 2 + 1;

	if (len <= AGENT_FREE_FRAME)
		return 0;
	if (values > AGENT_MAX_JSON_VALUES)
		values = AGENT_MAX_JSON_VALUES;
	/* The payload, jansson's copy of each string, a decoded copy (base64, exec stdin, the
	 * eval request re-encoded): 3 bytes per byte; plus the parsed values; plus one read
	 * chunk buffered before the reservation. */
	return 3 * len + values * AGENT_VALUE_COST + (64u << 10);
}

size_t mem_op_cost(const struct agent_request *req)
{
	switch (req->op) {
	case OP_READ_FILE:
		/* The bytes read, their base64, jansson's copy of it, the reply frame. */
		return 4 * req->read_file.max_bytes + (64u << 10);
	case OP_GET_TREE:
		/* The archive (grown by doubling), its base64, jansson's copy, the reply frame. */
		return 5 * req->get_tree.max_bytes + (1u << 20);
	default:
		return 0;
	}
}
