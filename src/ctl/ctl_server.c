/* Control server state: completions from other threads and in-flight probe requests. */
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "util/clock.h"
#include "util/log.h"
#include "util/thread.h"
#include "core/vm.h"
#include "ctl/ctl_server.h"
#include "ctl/ctl_socket.h"
#include "jail/seccomp.h"
#include "devices/virtio_net.h"

struct vm *ctl_vm(struct ctl_server *srv)
{
	return srv->vm;
}

/* Queue c (or a new completion when NULL) for the loop and wake it. */
static void complete(struct ctl_server *srv, struct completion *c, uint64_t client, json_t *reply)
{
	uint64_t one = 1;

	if (!c)
		c = calloc(1, sizeof(*c));
	if (!c) {
		/* The client stays waiting until it goes or the VM ends. */
		log_err("control: no memory to queue the reply to client %" PRIu64, client);
		json_decref(reply);
		return;
	}
	c->client = client;
	c->reply = reply;
	pthread_mutex_lock(&srv->lock);
	*srv->done_tail = c;
	srv->done_tail = &c->next;
	pthread_mutex_unlock(&srv->lock);
	if (write(srv->done_fd, &one, sizeof(one)) != sizeof(one))
		log_warn("control: waking the loop: %s", strerror(errno));
}

void ctl_complete(struct ctl_server *srv, uint64_t client, json_t *reply)
{
	complete(srv, NULL, client, reply);
}

void ctl_worker_done(struct ctl_server *srv, uint64_t client, json_t *reply)
{
	struct completion *c = srv->worker_reply;

	srv->worker_reply = NULL; /* the loop frees it with the others */
	complete(srv, c, client, reply);
}

/* The worker holds the control thread's filters: it says so before it runs (a cow branch
 * forks the template from it, and the children must not load them again). */
static void *worker_main(void *arg)
{
	struct ctl_server *srv = arg;

	jail_seccomp_inherit(srv->worker_roles);
	return srv->worker_fn(srv->worker_arg);
}

int ctl_worker_start(struct ctl_server *srv, const char *what, void *(*fn)(void *), void *arg)
{
	int err;

	if (srv->busy || srv->worker_started)
		return -EBUSY;
	srv->worker_reply = calloc(1, sizeof(*srv->worker_reply));
	if (!srv->worker_reply)
		return log_errno(-ENOMEM, "allocating the %s worker's reply", what);
	srv->worker_reply->worker = true;
	srv->worker_fn = fn;
	srv->worker_arg = arg;
	srv->worker_roles = jail_seccomp_roles();
	err = thread_start(&srv->worker, worker_main, srv);
	if (err) {
		free(srv->worker_reply);
		srv->worker_reply = NULL;
		return log_errno(-err, "starting the %s worker thread", what);
	}
	srv->worker_started = true;
	srv->busy = what;
	return 0;
}

#define THP_STEP_NS (2 * NS_PER_MS)	 /* the loop answers between steps */
#define THP_BESIDE_WORKER_NS (200 * NS_PER_MS) /* a worker runs: look again then */

static void thp_tick(void *arg)
{
	struct ctl_server *srv = arg;
	struct vm *vm = srv->vm;
	struct thp_repair *r = thp_repair_get(&vm->thp);
	int ret;

	if (!thp_repair_wanted(r, &vm->mem))
		return;
	if (srv->busy) { /* a branch or snapshot: never collapse beside its pause */
		ctl_thp_schedule(srv, THP_BESIDE_WORKER_NS);
		return;
	}
	ret = thp_repair_step(r, &vm->mem, THP_STEP_NS);
	if (ret == 1)
		ctl_thp_schedule(srv, 0);
	else if (ret == 0 && thp_repair_wanted(r, &vm->mem)) /* sharers remain */
		ctl_thp_schedule(srv, thp_repair_next_wait_s(r) * NS_PER_S);
}

void ctl_thp_schedule(struct ctl_server *srv, uint64_t delay_ns)
{
	if (thp_repair_wanted(thp_repair_get(&srv->vm->thp), &srv->vm->mem))
		ev_timer_arm(&srv->loop, &srv->thp_timer, monotonic_ns() + delay_ns, thp_tick, srv);
}

void ctl_worker_join(struct ctl_server *srv)
{
	if (!srv->worker_started)
		return;
	pthread_join(srv->worker, NULL);
	free(srv->worker_reply); /* NULL unless the worker ended without answering */
	srv->worker_reply = NULL;
	srv->worker_started = false;
	srv->busy = NULL;
}

/* Runs on the vCPU thread: record the result and queue it, nothing allocated. */
static void probe_done(void *ctx, int vcpu_id, const struct probe_result *res)
{
	struct pending *p = ctx;
	struct ctl_server *srv = p->srv;

	pthread_mutex_lock(&srv->lock);
	p->prev->next = p->next;
	p->next->prev = p->prev;
	pthread_mutex_unlock(&srv->lock);
	p->vcpu_id = vcpu_id;
	p->res = *res;
	p->done.probe = p;
	complete(srv, &p->done, p->client, NULL);
}

json_t *ctl_probe_reply(const struct pending *p)
{
	const struct probe_result *res = &p->res;
	int vcpu_id = p->vcpu_id;
	json_t *reply;
	char hex[32];

	if (res->status != PROBE_OK) {
		reply = ctl_reply_error("probe %s on vcpu %d: %s", probe_cmd_name(p->cmd), vcpu_id,
					probe_status_name(res->status));
	} else if (p->cmd == PROBE_CMD_PING && res->result[0] != (PROBE_MAGIC ^ p->nonce)) {
		reply = ctl_reply_error("probe ping on vcpu %d: wrong answer 0x%" PRIx64, vcpu_id,
					res->result[0]);
	} else {
		reply = ctl_reply_ok();
		json_object_set_new(reply, "vcpu", json_integer(vcpu_id));
		json_object_set_new(reply, "counter", json_integer((json_int_t)res->result[1]));
		json_object_set_new(reply, "dirty_iters", json_integer((json_int_t)res->result[2]));
		json_object_set_new(reply, "latency_us", json_real((double)res->latency_ns / 1e3));
		if (p->cmd == PROBE_CMD_CHECKSUM) {
			snprintf(hex, sizeof(hex), "0x%016" PRIx64, res->result[0]);
			json_object_set_new(reply, "checksum", json_string(hex));
		}
		if (p->cmd == PROBE_CMD_BLK_IO) {
			json_object_set_new(reply, "status", json_integer((json_int_t)res->result[0]));
			json_object_set_new(reply, "used", json_integer((json_int_t)res->result[3]));
		}
		if (p->cmd == PROBE_CMD_NET_UP) {
			char mac[18];
			uint8_t b[6];
			for (int i = 0; i < 6; i++)
				b[i] = (uint8_t)(res->result[3] >> (8 * i));
			virtio_net_format_mac(b, mac, sizeof(mac));
			json_object_set_new(reply, "features", json_integer((json_int_t)res->result[0]));
			json_object_set_new(reply, "mac", json_string(mac));
		}
		if (p->cmd == PROBE_CMD_NET_SEND || p->cmd == PROBE_CMD_NET_RECV) {
			json_object_set_new(reply, "frames", json_integer((json_int_t)res->result[0]));
			json_object_set_new(reply, "bytes", json_integer((json_int_t)res->result[3]));
		}
		if (p->cmd == PROBE_CMD_NET_STATS) {
			json_object_set_new(reply, "status", json_integer((json_int_t)(res->result[0] & 0xffff)));
			json_object_set_new(reply, "announces", json_integer((json_int_t)(res->result[0] >> 16)));
			json_object_set_new(reply, "rx_frames",
					    json_integer((json_int_t)(res->result[3] & 0xffffffffULL)));
			json_object_set_new(reply, "tx_frames", json_integer((json_int_t)(res->result[3] >> 32)));
		}
		if (p->cmd == PROBE_CMD_VSOCK_LISTEN || p->cmd == PROBE_CMD_VSOCK_STATS)
			json_object_set_new(reply, "result", json_pack("[I,I]", (json_int_t)res->result[0],
								       (json_int_t)res->result[3]));
	}
	return reply;
}

json_t *ctl_probe_submit(struct ctl_server *srv, struct ctl_request *req, int vcpu,
			 const struct probe_request *preq)
{
	struct pending *p = calloc(1, sizeof(*p));
	int err;

	_Static_assert(offsetof(struct pending, done) == 0, "free(completion) frees the pending");
	if (!p)
		return ctl_reply_error("out of memory");
	*p = (struct pending){ .srv = srv, .client = req->client, .cmd = preq->cmd,
			       .nonce = preq->arg[0] };
	pthread_mutex_lock(&srv->lock);
	p->next = srv->pending.next;
	p->prev = &srv->pending;
	p->next->prev = p;
	srv->pending.next = p;
	pthread_mutex_unlock(&srv->lock);
	err = probe_post(srv->vm->probe, vcpu, preq, probe_done, p);
	if (!err)
		return NULL;
	pthread_mutex_lock(&srv->lock);
	p->prev->next = p->next;
	p->next->prev = p->prev;
	pthread_mutex_unlock(&srv->lock);
	free(p);
	switch (err) {
	case -EBUSY: return ctl_reply_error("vcpu %d is busy with another probe command", vcpu);
	case -ERANGE: return ctl_reply_error("range is not page aligned inside the probe work area");
	case -ENODEV: return ctl_reply_error("no probe guest on vcpu %d", vcpu);
	default: return ctl_reply_error("probe request rejected: %s", strerror(-err));
	}
}

struct completion *ctl_take_completions(struct ctl_server *srv)
{
	pthread_mutex_lock(&srv->lock);
	struct completion *list = srv->done_head;
	srv->done_head = NULL;
	srv->done_tail = &srv->done_head;
	pthread_mutex_unlock(&srv->lock);
	return list;
}

void ctl_drop_pending(struct ctl_server *srv)
{
	/* Only after the vCPU threads are joined: no probe_done can run concurrently. */
	while (srv->pending.next != &srv->pending) {
		struct pending *p = srv->pending.next;
		p->prev->next = p->next;
		p->next->prev = p->prev;
		free(p);
	}
}
