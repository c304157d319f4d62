/* util/evloop: callbacks get their fd's events, priorities run in order, an event of a batch
 * never reaches a handler registered after its fd was dropped, timers fire once and on time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "util/clock.h"
#include "util/evloop.h"

struct rec {
	char order[16];
	int n;
	uint32_t events;
};

struct handler {
	struct rec *rec;
	char name;
	struct evloop *l;
	int *victim_id;  /* deleted (and its slot reused) by this handler */
	int *reused_id;
	struct handler *reuser;
	int reuse_fd;
};

static void on_fd(void *arg, uint32_t events)
{
	struct handler *h = arg;

	h->rec->order[h->rec->n++] = h->name;
	h->rec->events = events;
	if (h->victim_id) {
		ev_del(h->l, *h->victim_id);
		*h->reused_id = ev_add(h->l, h->reuse_fd, EPOLLIN, EV_LATER, on_fd, h->reuser);
		h->victim_id = NULL;
	}
}

static void make_ready_pipe(int p[2])
{
	assert_int_equal(pipe(p), 0);
	assert_int_equal(write(p[1], "x", 1), 1);
}

static void test_callbacks_and_priorities(void **state)
{
	struct evloop l;
	struct rec rec = { 0 };
	struct handler a = { .rec = &rec, .name = 'a' }, b = { .rec = &rec, .name = 'b' };
	int pa[2], pb[2];

	(void)state;
	assert_int_equal(ev_init(&l, "test"), 0);
	make_ready_pipe(pa);
	make_ready_pipe(pb);
	/* b registered first, but a runs first: it is EV_FIRST. */
	assert_true(ev_add(&l, pb[0], EPOLLIN, EV_LATER, on_fd, &b) >= 0);
	int ida = ev_add(&l, pa[0], EPOLLIN, EV_FIRST, on_fd, &a);
	assert_true(ida >= 0);
	assert_int_equal(ev_run_once(&l, 1000), 2);
	assert_string_equal(rec.order, "ab");
	assert_true(rec.events & EPOLLIN);
	/* Silenced: nothing from a, although its pipe is still readable. */
	assert_int_equal(ev_mod(&l, ida, 0), 0);
	rec = (struct rec){ 0 };
	assert_int_equal(ev_run_once(&l, 0), 1);
	assert_string_equal(rec.order, "b");
	assert_int_equal(ev_mod(&l, 999, EPOLLIN), -EINVAL);
	ev_del(&l, -1);
	ev_fini(&l);
	for (int i = 0; i < 2; i++) {
		close(pa[i]);
		close(pb[i]);
	}
}

static void test_stale_events_are_dropped(void **state)
{
	struct evloop l;
	struct rec rec = { 0 };
	struct handler a = { .rec = &rec, .name = 'a' }, b = { .rec = &rec, .name = 'b' },
		       c = { .rec = &rec, .name = 'c' };
	int pa[2], pb[2], pc[2], idb, idc = -1;

	(void)state;
	assert_int_equal(ev_init(&l, "test"), 0);
	make_ready_pipe(pa);
	make_ready_pipe(pb);
	make_ready_pipe(pc);
	assert_true(ev_add(&l, pa[0], EPOLLIN, EV_FIRST, on_fd, &a) >= 0);
	idb = ev_add(&l, pb[0], EPOLLIN, EV_LATER, on_fd, &b);
	assert_true(idb >= 0);
	/* a drops b and registers c, which takes b's slot; b's pending event must not reach c. */
	a.l = &l;
	a.victim_id = &idb;
	a.reused_id = &idc;
	a.reuser = &c;
	a.reuse_fd = pc[0];
	assert_int_equal(ev_run_once(&l, 1000), 2);
	assert_int_equal(idc, idb);
	assert_string_equal(rec.order, "a");
	/* Next round c's own event arrives. */
	assert_int_equal(ev_mod(&l, 0, 0), 0);
	rec = (struct rec){ 0 };
	assert_int_equal(ev_run_once(&l, 1000), 1);
	assert_string_equal(rec.order, "c");
	ev_fini(&l);
	for (int i = 0; i < 2; i++) {
		close(pa[i]);
		close(pb[i]);
		close(pc[i]);
	}
}

struct tick {
	struct evloop *l;
	struct ev_timer t;
	int fired;
	bool rearm_past;
	uint64_t at;
};

static void on_tick(void *arg)
{
	struct tick *k = arg;

	k->fired++;
	k->at = monotonic_ns();
	if (k->rearm_past)
		ev_timer_arm(k->l, &k->t, 0, on_tick, k);
}

static void test_timers(void **state)
{
	struct evloop l;
	struct tick k = { .l = &l }, never = { .l = &l };
	uint64_t t0;

	(void)state;
	assert_int_equal(ev_init(&l, "test"), 0);
	t0 = monotonic_ns();
	ev_timer_arm(&l, &k.t, t0 + 30000000, on_tick, &k);
	ev_timer_arm(&l, &never.t, t0 + 60000000000ULL, on_tick, &never);
	/* No fd at all: the wait ends for the timer, not for the caller's bound. */
	while (!k.fired)
		assert_true(ev_run_once(&l, -1) >= 0);
	assert_true(k.at >= t0 + 30000000);
	assert_true(k.at < t0 + 5000000000ULL);
	assert_false(k.t.armed);
	assert_int_equal(never.fired, 0);
	/* A timer that re-arms itself for the past runs once per ev_run_timers, not forever. */
	k.rearm_past = true;
	k.fired = 0;
	ev_timer_arm(&l, &k.t, 0, on_tick, &k);
	ev_run_timers(&l);
	assert_int_equal(k.fired, 1);
	ev_run_timers(&l);
	assert_int_equal(k.fired, 2);
	ev_timer_disarm(&l, &k.t);
	ev_timer_disarm(&l, &never.t);
	ev_timer_disarm(&l, &never.t);
	assert_null(l.timers);
	ev_fini(&l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_callbacks_and_priorities),
		cmocka_unit_test(test_stale_events_are_dropped),
		cmocka_unit_test(test_timers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
