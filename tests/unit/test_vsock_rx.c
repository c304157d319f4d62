/* virtio-vsock receive buffers too small for a header and data: handed back, no busy loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "devices/vsock_impl.h"
#include "virtio_testvm.h"

#define QN 16
#define RXQ 0x100000ULL /* rings of queue q at RXQ + q * 0x10000 */
#define RXBUF 0x200000ULL
#define TXBUF 0x300000ULL
#define BUFSZ 2048
#define TINY ((uint32_t)sizeof(struct vsock_hdr)) /* 44 bytes: a header, no payload */

struct fixture {
	struct vm vm;
	struct vsock *v;
	char dir[64], path[108];
	uint16_t rx_used_seen, tx_avail;
	uint8_t *ram;
};

static struct virtq_desc *desc(struct fixture *f, int q, int i)
{
	return (struct virtq_desc *)(f->ram + RXQ + q * 0x10000ULL) + i;
}
static uint16_t *avail(struct fixture *f, int q) { return (uint16_t *)(f->ram + RXQ + q * 0x10000ULL + 0x1000); }
static uint16_t *used(struct fixture *f, int q) { return (uint16_t *)(f->ram + RXQ + q * 0x10000ULL + 0x2000); }
static uint32_t used_id(struct fixture *f, uint16_t i) { return *(uint32_t *)((uint8_t *)used(f, 0) + 4 + 8 * (i % QN)); }
static uint32_t used_len(struct fixture *f, uint16_t i) { return *(uint32_t *)((uint8_t *)used(f, 0) + 8 + 8 * (i % QN)); }

static void post(struct fixture *f, int q, uint16_t d)
{
	uint16_t idx = avail(f, q)[1];

	avail(f, q)[2 + idx % QN] = d;
	__atomic_store_n(&avail(f, q)[1], (uint16_t)(idx + 1), __ATOMIC_RELEASE);
	tvm_wr(f->v->mmio, VMMIO_QUEUE_NOTIFY, (uint32_t)q);
}

/* Receive buffer i of len bytes, posted to the rx queue. */
static void post_rx(struct fixture *f, int i, uint32_t len)
{
	*desc(f, 0, i) = (struct virtq_desc){ RXBUF + (uint64_t)i * BUFSZ, len, VIRTQ_DESC_F_WRITE, 0 };
	post(f, 0, (uint16_t)i);
}

static int setup(void **state)
{
	static struct fixture f;

	memset(&f, 0, sizeof(f));
	/* A private (0700) directory: sockets are not put in world-writable ones. */
	snprintf(f.dir, sizeof(f.dir), "/tmp/forkvm-test-vsock-rx-XXXXXX");
	if (!mkdtemp(f.dir))
		return -1;
	snprintf(f.path, sizeof(f.path), "%s/v.sock", f.dir);
	if (tvm_init(&f.vm) || vsock_create(&f.vm, 0, f.path, 0, &f.v) ||
	    vsock_start(f.v))
		return -1;
	f.ram = f.vm.mem.host;
	tvm_negotiate(f.v->mmio);
	for (int q = 0; q < 3; q++)
		tvm_queue(f.v->mmio, (uint32_t)q, QN, RXQ + q * 0x10000ULL);
	tvm_wr(f.v->mmio, VMMIO_STATUS, 0xf);
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	vsock_destroy(f->v);
	guest_mem_destroy(&f->vm.mem);
	unlink(f->path);
	return rmdir(f->dir);
}

/* Wait (2 s at most) for the used index to reach want. */
static bool wait_used(struct fixture *f, uint16_t want)
{
	for (int i = 0; i < 2000; i++) {
		if ((uint16_t)(__atomic_load_n(&used(f, 0)[1], __ATOMIC_ACQUIRE) - want) < 0x8000)
			return true;
		usleep(1000);
	}
	return false;
}

static void guest_send(struct fixture *f, uint16_t op, uint32_t src, uint32_t dst, uint32_t buf_alloc)
{
	uint16_t i = f->tx_avail++ % QN;
	struct vsock_hdr *h = (struct vsock_hdr *)(f->ram + TXBUF + i * BUFSZ);

	*h = (struct vsock_hdr){ .src_cid = 3, .dst_cid = 2, .src_port = src, .dst_port = dst,
				 .type = 1, .op = op, .buf_alloc = buf_alloc };
	*desc(f, 1, i) = (struct virtq_desc){ TXBUF + i * BUFSZ, (uint32_t)sizeof(*h), 0, 0 };
	post(f, 1, i);
}

static int host_connect(struct fixture *f, const char *line)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", f->path);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(write(fd, line, strlen(line)), (ssize_t)strlen(line));
	return fd;
}

static uint64_t cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void test_tiny_rx_buffers_do_not_spin(void **state)
{
	struct fixture *f = *state;
	struct vsock_hdr *h;
	char line[64] = { 0 }, data[4096];
	struct pollfd p;
	uint64_t cpu0, cpu;
	uint32_t port, got = 0;
	int fd;

	/* A header-sized buffer carries the connection request (a control packet). */
	post_rx(f, 0, TINY);
	fd = host_connect(f, "CONNECT 77\n");
	assert_true(wait_used(f, 1));
	assert_int_equal(used_len(f, 0), TINY);
	h = (struct vsock_hdr *)(f->ram + RXBUF);
	assert_int_equal(h->op, VSOCK_OP_REQUEST);
	port = h->src_port;
	f->rx_used_seen = 1;
	guest_send(f, VSOCK_OP_RESPONSE, 77, port, 65536);
	p = (struct pollfd){ .fd = fd, .events = POLLIN };
	assert_int_equal(poll(&p, 1, 2000), 1);
	assert_true(read(fd, line, sizeof(line) - 1) > 0);
	assert_memory_equal(line, "OK ", 3);

	/* Data waits on the socket; the guest offers only buffers with no room for any. */
	memset(data, 'x', sizeof(data));
	assert_int_equal(write(fd, data, sizeof(data)), (ssize_t)sizeof(data));
	for (int i = 1; i < 9; i++)
		post_rx(f, i, (uint32_t)(i % 2 ? TINY : 16));
	assert_true(wait_used(f, 9));
	for (uint16_t i = 1; i < 9; i++)
		assert_int_equal(used_len(f, i), 0); /* handed back unused */
	f->rx_used_seen = 9;

	/* Nothing left to do: the device must be idle, not popping and re-queueing forever. */
	cpu0 = cpu_ns();
	usleep(300000);
	cpu = cpu_ns() - cpu0;
	assert_true(cpu < 100000000ULL); /* under a third of one CPU over 300 ms */
	assert_int_equal(__atomic_load_n(&used(f, 0)[1], __ATOMIC_ACQUIRE), 9);

	/* A usable buffer, even behind a tiny one, gets the data. */
	post_rx(f, 9, TINY);
	post_rx(f, 10, BUFSZ);
	while (got < sizeof(data)) {
		uint16_t i = f->rx_used_seen;

		assert_true(wait_used(f, (uint16_t)(i + 1)));
		f->rx_used_seen++;
		if (used_len(f, i) == 0)
			continue;
		h = (struct vsock_hdr *)(f->ram + RXBUF + (uint64_t)used_id(f, i) * BUFSZ);
		assert_int_equal(h->op, VSOCK_OP_RW);
		assert_int_equal(used_len(f, i), sizeof(*h) + h->len);
		got += h->len;
		post_rx(f, (int)used_id(f, i), BUFSZ);
	}
	assert_int_equal(got, sizeof(data));
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_tiny_rx_buffers_do_not_spin, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
