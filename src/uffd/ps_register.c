/* Registering a VM on the page server (checks, prefetch lists, epoll), and dropping it. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/errmsg.h"
#include "util/log.h"
#include "uffd/ps_server.h"
#include "util/clock.h"

/* Is fd really a userfaultfd? A wrong fd type must be an error, not a mystery later. */
static bool is_uffd(int fd)
{
	char link[64], target[64];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, target, sizeof(target) - 1);
	if (n < 0)
		return false;
	target[n] = 0;
	return strcmp(target, "anon_inode:[userfaultfd]") == 0;
}

/* Demand faults: the loop runs these before any connection of the same wakeup. */
static void uffd_event(void *arg, uint32_t events)
{
	struct ps_vm *vm = arg;

	(void)events;
	if (!vm->gone)
		ps_vm_uffd_ready(vm->srv, vm);
}

int ps_vm_register(struct ps_server *s, struct ps_conn *c, json_t *req, int uffd,
		   struct fvm_err *err)
{
	struct ps_vm *vm = calloc(1, sizeof(*vm));
	struct fvm_err why = FVM_ERR_INIT;
	int ret;

	if (!vm)
		return -ENOMEM;
	vm->srv = s;
	vm->ev_id = -1;
	vm->uffd = -1;
	vm->load.fd = -1;
	vm->phase = PS_IDLE;
	ret = ps_register_from_json(req, &vm->reg, err);
	if (ret)
		goto err;
	ret = -EINVAL;
	if (uffd < 0 || !is_uffd(uffd)) {
		errf(err, "the register message must carry a userfaultfd (SCM_RIGHTS)");
		goto err;
	}
	ret = ps_snap_get(s, vm->reg.snapshot, &vm->snap, &why);
	if (ret) {
		errf(err, "%s", why.msg);
		goto err;
	}
	ret = ps_layout_check(&vm->reg, &vm->snap->cfg, vm->snap->size, &why);
	if (ret) {
		errf(err, "layout refused: %s", why.msg);
		goto err;
	}
	vm->npages = vm->reg.size / 4096;
	vm->present = calloc(1, vm->npages / 8 + 1);
	vm->discarded = calloc(1, vm->npages / 8 + 1);
	if (!vm->present || !vm->discarded) {
		ret = -ENOMEM;
		goto err;
	}
	vm->recording = vm->reg.record;
	if (vm->reg.prefetch && !vm->reg.record) {
		ret = ps_prefetch_load(vm, err);
		if (ret)
			goto err;
	}
	if (fcntl(uffd, F_SETFL, O_NONBLOCK) < 0) {
		ret = -errno;
		errf(err, "fcntl O_NONBLOCK on the uffd: %s", strerror(errno));
		goto err;
	}
	vm->uffd = uffd;
	vm->ev_id = ev_add(&s->loop, uffd, EPOLLIN, EV_FIRST, uffd_event, vm);
	if (vm->ev_id < 0) {
		ret = vm->ev_id;
		vm->uffd = -1;
		errf(err, "watching the uffd (epoll_ctl add): %s", strerror(-ret));
		goto err;
	}
	vm->id = ++s->next_id;
	vm->t_register = monotonic_ns();
	vm->conn = c;
	c->vm = vm;
	vm->next = s->vms;
	s->vms = vm;
	log_info("vm %d (%s, pid %d): registered %s, %llu MiB%s%s", vm->id, vm->reg.name,
		 vm->reg.pid, vm->reg.snapshot, (unsigned long long)(vm->reg.size >> 20),
		 vm->recording ? ", recording" : "",
		 vm->phase == PS_LOAD ? ", reading its prefetch lists" :
		 vm->nhot ? ", prefetching the hot set" : "");
	/* The hot set goes in before the ack (and the lists are read before it); otherwise the
	 * VMM may start its vCPUs now. */
	if (vm->phase != PS_HOT && vm->phase != PS_LOAD)
		ps_send_ack(vm);
	return 0;
err:
	ps_prefetch_unload(vm);
	ps_snap_put(s, vm->snap);
	free(vm->present);
	free(vm->discarded);
	free(vm->hot);
	free(vm->order);
	free(vm);
	return ret;
}

void ps_vm_drop(struct ps_server *s, struct ps_vm *vm, const char *why)
{
	if (vm->gone)
		return;
	if (vm->recording)
		ps_record_finish(vm, why);
	log_info("vm %d (%s): dropped: %s", vm->id, vm->reg.name, why);
	snprintf(vm->why, sizeof(vm->why), "%s", why);
	vm->gone = true;
	s->ngone++;
	if (vm->uffd >= 0) {
		ev_del(&s->loop, vm->ev_id);
		vm->ev_id = -1;
		close(vm->uffd);
		vm->uffd = -1;
	}
	if (vm->conn)
		vm->conn->vm = NULL;
	vm->conn = NULL;
	ps_prefetch_unload(vm);
	ps_snap_put(s, vm->snap);
	vm->snap = NULL;
	free(vm->present);
	free(vm->discarded);
	free(vm->hot);
	free(vm->order);
	free(vm->rec);
	vm->present = vm->discarded = NULL;
	vm->hot = vm->order = vm->rec = NULL;
	/* vm->q stays: the caller may be iterating over it; freed with the VM (ps_vm_free). */
}

void ps_vm_free(struct ps_vm *vm)
{
	free(vm->q);
	free(vm);
}
