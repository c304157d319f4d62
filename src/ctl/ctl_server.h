/* Internals shared by the control server and its command handlers. */
#ifndef FORKVM_CTL_SERVER_H
#define FORKVM_CTL_SERVER_H

#include "ctl/ctl.h"
#include "devices/probe_dev.h"

#include <pthread.h>

#include "util/evloop.h"

#define MAX_CLIENTS 64
/* Replies a client has not read yet, at most; past this it is disconnected. */
#define CTL_MAX_UNSENT (4u << 20)
/* A client with no request in flight is closed after this long without progress. */
#define CTL_IDLE_MS_DEFAULT 60000
#define CTL_IDLE_ENV "FORKVM_CTL_IDLE_MS"

struct ctl_client {
	uint64_t id; /* 0 = free slot */
	int fd;
	int ev_id; /* its fd in the server's loop */
	struct ctl_server *srv;
	bool waiting; /* a reply is pending; further lines wait in buf */
	bool closing; /* reads no more requests; closed once out is sent */
	bool held;    /* its next request waits for the worker to finish (still in buf) */
	bool eof;     /* the peer shut down its side: answer what is buffered, then close */
	json_t *wait_id; /* the waiting request's "id", echoed in its reply (owned) */
	uint32_t events;    /* the interest now registered (EPOLLIN, EPOLLOUT) */
	uint64_t active_ns; /* last request read or reply byte sent */
	char *out;	    /* unsent replies: out[out_off..out_len) */
	size_t out_off, out_len, out_cap;
	size_t len;
	char buf[CTL_MAX_LINE];
};

struct pending;

struct completion {
	struct completion *next;
	uint64_t client;
	json_t *reply;
	struct pending *probe;	/* a probe command's result: the loop builds the reply */
	bool worker; /* the worker thread's last word: the loop joins it */
};

/*
 * A probe command in flight. Its completion is its first member: the vCPU thread that
 * finishes it queues it without allocating (a vCPU thread never calls malloc: in a cow child
 * its first allocation would make a malloc arena of its own, pages copied per child), and
 * free() of the completion frees the whole.
 */
struct pending {
	struct completion done;
	struct pending *next, *prev;
	struct ctl_server *srv;
	uint64_t client;
	uint32_t cmd;
	uint64_t nonce;
	int vcpu_id;
	struct probe_result res;
};

struct ctl_server {
	struct vm *vm;
	struct evloop loop;
	int listen_fd, done_fd, sig_fd;
	int broker_fd, broker_id; /* a pidfd of the network broker this VMM started; -1 none */
	bool running;
	uint64_t next_id;
	uint64_t idle_ns; /* 0 = no idle timeout */
	pthread_mutex_t lock; /* completions and pending */
	struct completion *done_head, **done_tail;
	struct pending pending; /* list head */
	/* One long operation (snapshot) at a time runs on a worker thread, off the loop. */
	pthread_t worker;
	bool worker_started;
	void *(*worker_fn)(void *);	/* what the worker runs, and with */
	void *worker_arg;
	unsigned worker_roles;		/* the seccomp roles it inherits (jail_seccomp_inherit) */
	struct completion *worker_reply; /* allocated up front: its reply cannot be lost */
	const char *busy; /* its command name while it runs (loop thread only) */
	struct ev_timer thp_timer; /* huge-page repair passes after cow branches */
	/* Last: 4 MiB of which an idle VM touches one slot's page, the rest stays zero pages
	 * (docs/PERFORMANCE.md, private memory per child). */
	struct ctl_client clients[MAX_CLIENTS];
};

/* Run fn(arg) on the worker thread for `what`; -EBUSY while another one runs. fn ends by
 * calling ctl_worker_done exactly once. */
int ctl_worker_start(struct ctl_server *srv, const char *what, void *(*fn)(void *), void *arg);
/* The worker's reply to client (takes ownership); the loop then joins the worker. */
void ctl_worker_done(struct ctl_server *srv, uint64_t client, json_t *reply);
/* After a worker: if a cow fork left huge pages to put back, run repair passes from the loop
 * in bounded steps, never beside a worker (mem/thp_repair.h). Loop thread only. */
void ctl_thp_schedule(struct ctl_server *srv, uint64_t delay_ns);
#define THP_AFTER_WORKER_NS NS_PER_S /* the first pass: a second after the branch */
/* Wait for a running worker (the loop is ending); its reply stays queued. */
void ctl_worker_join(struct ctl_server *srv);

/* Take every queued completion (caller frees the list). */
struct completion *ctl_take_completions(struct ctl_server *srv);
/* The reply to a finished probe command (c->probe), built on the control thread. */
json_t *ctl_probe_reply(const struct pending *p);
/* Fail every in-flight probe request: the VM ended before the guest answered. */
void ctl_drop_pending(struct ctl_server *srv);

/* Post a probe request; the reply goes to req->client when the guest answers. */
json_t *ctl_probe_submit(struct ctl_server *srv, struct ctl_request *req, int vcpu,
			 const struct probe_request *preq);

#endif
