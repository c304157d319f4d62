/* The one event loop: a file descriptor maps to a callback and a pointer, plus one-shot
 * timers. The control server, the vsock device thread and the page server each run one
 * (docs/ARCHITECTURE.md, "Threads"). A loop belongs to one thread: that thread makes every
 * call on it, callbacks included. */
#ifndef FORKVM_UTIL_EVLOOP_H
#define FORKVM_UTIL_EVLOOP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>

/* events: what epoll reported (EPOLLIN, EPOLLOUT, EPOLLHUP, EPOLLERR). */
typedef void ev_fd_fn(void *arg, uint32_t events);
typedef void ev_timer_fn(void *arg);

/* Within one wakeup, every EV_FIRST handler runs before any EV_LATER one (the page server
 * serves demand faults before connections; vsock sees its stop request before it locks). */
enum ev_prio { EV_FIRST, EV_LATER, EV_NPRIO };

#define EV_BATCH 64

struct ev_slot {
	int fd;
	uint32_t gen; /* bumped when the slot is freed: stale events of a batch are dropped */
	uint32_t events;
	uint8_t prio;
	bool used;
	ev_fd_fn *fn;
	void *arg;
};

/* Owned by the caller (embedded in its object); armed on at most one loop at a time. */
struct ev_timer {
	uint64_t due_ns; /* monotonic_ns() */
	ev_timer_fn *fn;
	void *arg;
	struct ev_timer *next;
	uint64_t round; /* the loop's round when armed: ev_run_timers skips its own arms */
	bool armed;
};

struct evloop {
	int epfd;
	struct ev_slot *slots;
	uint32_t nslots;
	struct ev_timer *timers; /* armed, unordered (a loop has a handful) */
	struct epoll_event batch[EV_BATCH];
	int nbatch;
	uint64_t round;
	const char *owner; /* for messages: "control", "vsock", "page server" */
};

/* -errno, logged with the owner's name. Call it before anything else on l, ev_fini included. */
int ev_init(struct evloop *l, const char *owner);
/* Closes the epoll fd and forgets every registration; closes none of the callers' fds. */
void ev_fini(struct evloop *l);

/* Watch fd for events; returns an id (>= 0) for ev_mod/ev_del, or -errno (logged). */
int ev_add(struct evloop *l, int fd, uint32_t events, enum ev_prio prio, ev_fd_fn *fn, void *arg);
/* New event mask (0 = registered but silent); -errno, logged. */
int ev_mod(struct evloop *l, int id, uint32_t events);
/* Stop watching (call it before closing the fd). Events of the current batch for this id
 * are dropped, even if the id is reused by an ev_add in the same batch. id < 0: no-op. */
void ev_del(struct evloop *l, int id);

/* Run t->fn(t->arg) once, on the loop's thread, at monotonic due_ns or just after. Re-arming
 * an armed timer moves it. */
void ev_timer_arm(struct evloop *l, struct ev_timer *t, uint64_t due_ns, ev_timer_fn *fn,
		  void *arg);
void ev_timer_disarm(struct evloop *l, struct ev_timer *t);

/* Wait up to max_wait_ms (-1: no bound of the caller's) and never past the next timer; keep
 * what came as the batch. Returns the number of events (0 on a timeout or a signal), or -errno. */
int ev_wait(struct evloop *l, int max_wait_ms);
/* Call the batch's handlers of one priority, in the order epoll gave them. */
void ev_dispatch(struct evloop *l, enum ev_prio prio);
/* Call every timer that is due (each disarmed first, so it may re-arm itself). */
void ev_run_timers(struct evloop *l);
/* ev_wait, then every priority in order, then the timers. Returns ev_wait's value. */
int ev_run_once(struct evloop *l, int max_wait_ms);

#endif
