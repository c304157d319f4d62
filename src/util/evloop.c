/* The one event loop (util/evloop.h): epoll with generation-checked slots, plus timers. */
#include "util/evloop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/clock.h"
#include "util/log.h"

static uint64_t tag_of(const struct ev_slot *s, uint32_t idx)
{
	return ((uint64_t)s->gen << 32) | idx;
}

int ev_init(struct evloop *l, const char *owner)
{
	*l = (struct evloop){ .owner = owner };
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0)
		return log_errno(-errno, "%s: creating its event loop (epoll)", owner);
	return 0;
}

void ev_fini(struct evloop *l)
{
	if (l->epfd >= 0)
		close(l->epfd);
	free(l->slots);
	*l = (struct evloop){ .epfd = -1, .owner = l->owner };
}

static int slot_alloc(struct evloop *l)
{
	struct ev_slot *grown;
	uint32_t n, idx = l->nslots;

	for (uint32_t i = 0; i < l->nslots; i++)
		if (!l->slots[i].used)
			return (int)i;
	n = l->nslots ? l->nslots * 2 : 16;
	if (n > INT32_MAX / 2)
		return -ENOSPC;
	grown = realloc(l->slots, n * sizeof(*grown));
	if (!grown)
		return -ENOMEM;
	memset(grown + idx, 0, (n - idx) * sizeof(*grown));
	l->slots = grown;
	l->nslots = n;
	return (int)idx;
}

int ev_add(struct evloop *l, int fd, uint32_t events, enum ev_prio prio, ev_fd_fn *fn, void *arg)
{
	int idx = slot_alloc(l);
	struct ev_slot *s;
	struct epoll_event ev;

	if (idx < 0)
		return log_errno(idx, "%s: event loop slot for fd %d", l->owner, fd);
	s = &l->slots[idx];
	ev = (struct epoll_event){ .events = events, .data.u64 = tag_of(s, (uint32_t)idx) };
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		return log_errno(-errno, "%s: watching fd %d (epoll_ctl add)", l->owner, fd);
	s->fd = fd;
	s->events = events;
	s->prio = (uint8_t)prio;
	s->fn = fn;
	s->arg = arg;
	s->used = true;
	return idx;
}

static struct ev_slot *slot_get(struct evloop *l, int id)
{
	if (id < 0 || (uint32_t)id >= l->nslots || !l->slots[id].used)
		return NULL;
	return &l->slots[id];
}

int ev_mod(struct evloop *l, int id, uint32_t events)
{
	struct ev_slot *s = slot_get(l, id);
	struct epoll_event ev;

	if (!s)
		return log_errno(-EINVAL, "%s: changing event loop id %d: not registered", l->owner, id);
	if (s->events == events)
		return 0;
	ev = (struct epoll_event){ .events = events, .data.u64 = tag_of(s, (uint32_t)id) };
	if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, s->fd, &ev) < 0)
		return log_errno(-errno, "%s: changing the events of fd %d (epoll_ctl mod)", l->owner,
				 s->fd);
	s->events = events;
	return 0;
}

void ev_del(struct evloop *l, int id)
{
	struct ev_slot *s = slot_get(l, id);

	if (!s)
		return;
	/* ENOENT/EBADF: the fd was closed already, which also left the epoll set. */
	if (epoll_ctl(l->epfd, EPOLL_CTL_DEL, s->fd, NULL) < 0 && errno != ENOENT && errno != EBADF)
		log_debug("%s: epoll_ctl del fd %d: %s", l->owner, s->fd, strerror(errno));
	s->used = false;
	s->gen++;
	s->fn = NULL;
	s->arg = NULL;
	s->fd = -1;
}

void ev_timer_arm(struct evloop *l, struct ev_timer *t, uint64_t due_ns, ev_timer_fn *fn, void *arg)
{
	if (!t->armed) {
		t->next = l->timers;
		l->timers = t;
		t->armed = true;
	}
	t->due_ns = due_ns;
	t->fn = fn;
	t->arg = arg;
	t->round = l->round;
}

void ev_timer_disarm(struct evloop *l, struct ev_timer *t)
{
	if (!t->armed)
		return;
	for (struct ev_timer **pp = &l->timers; *pp; pp = &(*pp)->next) {
		if (*pp == t) {
			*pp = t->next;
			break;
		}
	}
	t->next = NULL;
	t->armed = false;
}

/* Milliseconds until the first timer (rounded up, so it is due on wakeup), or -1. */
static int ms_to_first_timer(const struct evloop *l)
{
	uint64_t now, first = UINT64_MAX, left;

	if (!l->timers)
		return -1;
	for (const struct ev_timer *t = l->timers; t; t = t->next)
		if (t->due_ns < first)
			first = t->due_ns;
	now = monotonic_ns();
	if (first <= now)
		return 0;
	left = (first - now + 999999) / 1000000;
	return left > INT32_MAX ? INT32_MAX : (int)left;
}

int ev_wait(struct evloop *l, int max_wait_ms)
{
	int wait = ms_to_first_timer(l), n;

	if (max_wait_ms >= 0 && (wait < 0 || max_wait_ms < wait))
		wait = max_wait_ms;
	n = epoll_wait(l->epfd, l->batch, EV_BATCH, wait);
	if (n < 0) {
		l->nbatch = 0;
		if (errno == EINTR)
			return 0;
		return log_errno(-errno, "%s: waiting for events (epoll_wait)", l->owner);
	}
	l->nbatch = n;
	return n;
}

void ev_dispatch(struct evloop *l, enum ev_prio prio)
{
	for (int i = 0; i < l->nbatch; i++) {
		uint64_t tag = l->batch[i].data.u64;
		uint32_t idx = (uint32_t)tag;
		struct ev_slot *s;

		if (idx >= l->nslots)
			continue;
		s = &l->slots[idx];
		/* prio first: vsock dispatches EV_FIRST without its lock, while another thread
		 * may drop an EV_LATER connection (under the lock); such a slot is not looked at. */
		if (s->prio != prio || !s->used || s->gen != (uint32_t)(tag >> 32))
			continue;
		/* The callback may add (and so move l->slots) or delete: s is not used after it. */
		s->fn(s->arg, l->batch[i].events);
	}
}

void ev_run_timers(struct evloop *l)
{
	uint64_t now = monotonic_ns();
	bool again = true;

	/* A timer armed during this call, even for the past, waits for the next call. */
	l->round++;
	while (again) {
		again = false;
		for (struct ev_timer *t = l->timers; t; t = t->next) {
			if (t->due_ns > now || t->round == l->round)
				continue;
			ev_timer_disarm(l, t);
			t->fn(t->arg); /* may arm or disarm any timer: scan again */
			again = true;
			break;
		}
	}
}

int ev_run_once(struct evloop *l, int max_wait_ms)
{
	int n = ev_wait(l, max_wait_ms);

	if (n < 0)
		return n;
	for (int p = 0; p < EV_NPRIO; p++)
		ev_dispatch(l, (enum ev_prio)p);
	ev_run_timers(l);
	return n;
}
