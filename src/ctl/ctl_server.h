/* Internals shared by the control server and its command handlers. */
#ifndef FORKVM_CTL_SERVER_H
#define FORKVM_CTL_SERVER_H

#include "ctl/ctl.h"
#include "devices/probe_dev.h"

#include <pthread.h>

#define MAX_CLIENTS 64

struct ctl_client {
	uint64_t id; /* 0 = free slot */
	int fd;
	bool waiting; /* a reply is pending; further lines wait in buf */
	size_t len;
	char buf[CTL_MAX_LINE];
};

struct completion {
	struct completion *next;
	uint64_t client;
	json_t *reply;
};

struct pending {
	struct pending *next, *prev;
	struct ctl_server *srv;
	uint64_t client;
	uint32_t cmd;
	uint64_t nonce;
};

struct ctl_server {
	struct vm *vm;
	int epfd, listen_fd, done_fd, sig_fd;
	uint64_t next_id;
	struct ctl_client clients[MAX_CLIENTS];
	pthread_mutex_t lock; /* completions and pending */
	struct completion *done_head, **done_tail;
	struct pending pending; /* list head */
};

void ctl_client_send(struct ctl_client *c, json_t *reply);
/* Take every queued completion (caller frees the list). */
struct completion *ctl_take_completions(struct ctl_server *srv);
/* Fail every in-flight probe request: the VM ended before the guest answered. */
void ctl_drop_pending(struct ctl_server *srv);

/* Post a probe request; the reply goes to req->client when the guest answers. */
json_t *ctl_probe_submit(struct ctl_server *srv, struct ctl_request *req, int vcpu,
			 const struct probe_request *preq);

#endif
