/* After the ack: watch the page-server socket; on loss report it and serve faults locally. */
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/log.h"
#include "util/thread.h"
#include "jail/seccomp.h"
#include "uffd/ps_client.h"

/* One fault from the memory file: never a zero page where the snapshot had data. */
static void serve_one(struct ps_client *c, uint64_t addr, uint8_t *page)
{
	uint64_t base = (uint64_t)(uintptr_t)c->mem->host, off = (addr & ~4095ULL) - base;
	struct uffdio_copy cp = { .dst = base + off, .src = (uint64_t)(uintptr_t)page, .len = 4096 };

	if (off >= c->mem->size || pread(c->mem_fd, page, 4096, (off_t)off) != 4096) {
		log_err("fallback fault handler: cannot read page at offset %llu of the memory file",
			(unsigned long long)off);
		return;
	}
	if (ioctl(c->uffd, UFFDIO_COPY, &cp) < 0 && errno != EEXIST)
		log_err("fallback fault handler: UFFDIO_COPY at offset %llu: %s",
			(unsigned long long)off, strerror(errno));
}

/*
 * The VM is being stopped, but a vCPU or the control loop may sit in a fault the dead server
 * had read and never answered, or fault again before the stop lands. Serving those from the
 * memory file lets the stop finish instead of hanging.
 */
static void fallback_serve(struct ps_client *c)
{
	struct pollfd p[2] = { { .fd = c->uffd, .events = POLLIN }, { .fd = c->stop_efd, .events = POLLIN } };
	struct uffd_msg msgs[16];
	uint8_t *page = aligned_alloc(4096, 4096);

	if (!page)
		return;
	/* Faults the dead server had read: wake them so they fault again and come to us. */
	if (ioctl(c->uffd, UFFDIO_WAKE, &(struct uffdio_range){ (uint64_t)(uintptr_t)c->mem->host,
								c->mem->map_size }) < 0)
		log_err("fallback fault handler: UFFDIO_WAKE guest RAM: %s", strerror(errno));
	while (poll(p, 2, -1) >= 0 && !(p[1].revents & POLLIN)) {
		ssize_t n = read(c->uffd, msgs, sizeof(msgs));
		for (ssize_t i = 0; n > 0 && i < n / (ssize_t)sizeof(msgs[0]); i++)
			if (msgs[i].event == UFFD_EVENT_PAGEFAULT)
				serve_one(c, msgs[i].arg.pagefault.address, page);
	}
	free(page);
}

static void *watch_main(void *arg)
{
	struct ps_client *c = arg;
	struct pollfd p[2] = { { .fd = c->sock, .events = POLLIN | POLLRDHUP },
			       { .fd = c->stop_efd, .events = POLLIN } };
	char buf[256], msg[300];

	if (jail_seccomp_apply(JAIL_ROLE_DEVICE) < 0) {
		c->lost(c->ctx, "the page-server watcher could not load its seccomp filter");
		return NULL;
	}
	for (;;) {
		if (poll(p, 2, -1) < 0)
			continue;
		if (p[1].revents & POLLIN)
			return NULL;
		ssize_t n = recv(c->sock, buf, sizeof(buf) - 1, MSG_DONTWAIT);
		if (n > 0) {
			buf[n] = 0;
			/* A draining server filled every page: from now on the VM needs nobody. */
			if (strstr(buf, "\"event\":\"populated\"")) {
				log_info("page server %s populated all guest RAM before stopping; the VM "
					 "runs on without it", c->path);
				return NULL;
			}
			continue;
		}
		if (n < 0 && errno == EAGAIN)
			continue;
		break;
	}
	snprintf(msg, sizeof(msg), "page server %s closed the connection (crashed or killed): "
		 "stopping the VM, whose memory is no longer being served", c->path);
	log_err("%s", msg);
	c->lost(c->ctx, msg);
	fallback_serve(c);
	return NULL;
}

int ps_client_watch(struct ps_client *c, ps_lost_fn lost, void *ctx)
{
	int ret;

	c->lost = lost;
	c->ctx = ctx;
	c->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->stop_efd < 0)
		return log_errno(-errno, "eventfd for the page-server watcher");
	ret = -thread_start(&c->thread, watch_main, c);
	if (ret)
		return log_errno(ret, "starting the page-server watcher thread");
	c->watching = true;
	return 0;
}

void ps_client_close(struct ps_client *c)
{
	if (c->watching) {
		uint64_t one = 1;
		if (write(c->stop_efd, &one, sizeof(one)) != sizeof(one))
			log_warn("waking the page-server watcher: %s", strerror(errno));
		pthread_join(c->thread, NULL);
		c->watching = false;
	}
	if (c->stop_efd >= 0)
		close(c->stop_efd);
	if (c->sock >= 0)
		close(c->sock);
	if (c->mem_fd >= 0)
		close(c->mem_fd);
	c->stop_efd = c->sock = c->mem_fd = -1;
}
