/* virtio-vsock against an in-memory guest driver: handshake, credit both ways, RST, reset. */
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

struct fixture {
	struct vm vm;
	struct vsock *v;
	char dir[96], path[108];
	uint16_t rx_used_seen, tx_avail;
	uint8_t *ram;
};

static struct virtq_desc *desc(struct fixture *f, int q, int i)
{
	return (struct virtq_desc *)(f->ram + RXQ + q * 0x10000ULL) + i;
}
static uint16_t *avail(struct fixture *f, int q) { return (uint16_t *)(f->ram + RXQ + q * 0x10000ULL + 0x1000); }
static uint16_t *used(struct fixture *f, int q) { return (uint16_t *)(f->ram + RXQ + q * 0x10000ULL + 0x2000); }

static void post(struct fixture *f, int q, uint16_t d)
{
	uint16_t idx = avail(f, q)[1];

	avail(f, q)[2 + idx % QN] = d;
	__atomic_store_n(&avail(f, q)[1], (uint16_t)(idx + 1), __ATOMIC_RELEASE);
	tvm_wr(f->v->mmio, VMMIO_QUEUE_NOTIFY, (uint32_t)q);
}

static int setup(void **state)
{
	static struct fixture f;

	memset(&f, 0, sizeof(f));
	/* In a directory of its own: the listener refuses a world-writable one like /tmp. */
	snprintf(f.dir, sizeof(f.dir), "/tmp/forkvm-test-vsock-%d", (int)getpid());
	snprintf(f.path, sizeof(f.path), "%s/v.sock", f.dir);
	if (tvm_init(&f.vm) || vsock_create(&f.vm, 0, f.path, 0, &f.v) ||
	    vsock_start(f.v))
		return -1;
	f.ram = f.vm.mem.host;
	tvm_negotiate(f.v->mmio);
	for (int q = 0; q < 3; q++)
		tvm_queue(f.v->mmio, (uint32_t)q, QN, RXQ + q * 0x10000ULL);
	tvm_wr(f.v->mmio, VMMIO_STATUS, 0xf);
	for (int i = 0; i < QN; i++) {
		*desc(&f, 0, i) = (struct virtq_desc){ RXBUF + i * BUFSZ, BUFSZ, VIRTQ_DESC_F_WRITE, 0 };
		post(&f, 0, (uint16_t)i);
	}
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	vsock_destroy(f->v);
	guest_mem_destroy(&f->vm.mem);
	if (access(f->path, F_OK) == 0)
		return -1; /* the socket file must be gone */
	return rmdir(f->dir) < 0 ? -1 : 0;
}

/* Next packet the device put in the rx queue (recycling its buffer), within 2 s. */
static struct vsock_hdr *next_rx(struct fixture *f, uint8_t **payload)
{
	for (int i = 0; i < 2000; i++) {
		if (__atomic_load_n(&used(f, 0)[1], __ATOMIC_ACQUIRE) != f->rx_used_seen) {
			uint32_t id = *(uint32_t *)((uint8_t *)used(f, 0) + 4 + 8 * (f->rx_used_seen % QN));
			struct vsock_hdr *h = (struct vsock_hdr *)(f->ram + RXBUF + id * BUFSZ);
			f->rx_used_seen++;
			if (payload)
				*payload = (uint8_t *)(h + 1);
			post(f, 0, (uint16_t)id);
			return h;
		}
		usleep(1000);
	}
	return NULL;
}

/* Next non-data packet (the rest of the host's bytes may still be flowing). */
static struct vsock_hdr *next_ctrl(struct fixture *f)
{
	struct vsock_hdr *h;

	while ((h = next_rx(f, NULL)) != NULL && h->op == VSOCK_OP_RW)
		;
	return h;
}

static void guest_send(struct fixture *f, uint16_t op, uint32_t src, uint32_t dst, uint32_t buf_alloc,
		       uint32_t fwd_cnt, const void *data, uint32_t len)
{
	uint16_t i = f->tx_avail++ % QN;
	struct vsock_hdr *h = (struct vsock_hdr *)(f->ram + TXBUF + i * BUFSZ);

	*h = (struct vsock_hdr){ .src_cid = 3, .dst_cid = 2, .src_port = src, .dst_port = dst,
				 .len = len, .type = 1, .op = op, .buf_alloc = buf_alloc,
				 .fwd_cnt = fwd_cnt };
	if (len)
		memcpy(h + 1, data, len);
	*desc(f, 1, i) = (struct virtq_desc){ TXBUF + i * BUFSZ, (uint32_t)(sizeof(*h) + len), 0, 0 };
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

static ssize_t read_timeout(int fd, void *buf, size_t len)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, 2000) == 1 ? read(fd, buf, len) : -2;
}

static void test_handshake_credit_and_data(void **state)
{
	struct fixture *f = *state;
	int fd = host_connect(f, "CONNECT 77\n");
	char line[64] = { 0 }, big[10000];
	struct vsock_hdr *h = next_rx(f, NULL);
	uint32_t port, got = 0;

	assert_non_null(h);
	assert_int_equal(h->op, VSOCK_OP_REQUEST);
	assert_int_equal(h->src_cid, 2);
	assert_int_equal(h->dst_cid, 3);
	assert_int_equal(h->dst_port, 77);
	assert_int_equal(h->buf_alloc, VSOCK_BUF_ALLOC);
	port = h->src_port;
	assert_true(port >= VSOCK_FIRST_HOST_PORT);
	/* Accept with only 4096 bytes of credit. */
	guest_send(f, VSOCK_OP_RESPONSE, 77, port, 4096, 0, NULL, 0);
	assert_true(read_timeout(fd, line, sizeof(line) - 1) > 0);
	assert_int_equal(strtoul(line + 3, NULL, 10), port);
	assert_memory_equal(line, "OK ", 3);
	/* The host writes 10000 bytes; the guest must see exactly its credit, no more. */
	memset(big, 'a', sizeof(big));
	assert_int_equal(write(fd, big, sizeof(big)), (ssize_t)sizeof(big));
	while (got < 4096 && (h = next_rx(f, NULL)) != NULL) {
		assert_int_equal(h->op, VSOCK_OP_RW);
		got += h->len;
	}
	assert_int_equal(got, 4096);
	usleep(50000);
	assert_int_equal(used(f, 0)[1], f->rx_used_seen); /* nothing beyond the credit */
	/* Consuming it (fwd_cnt) releases the rest. */
	guest_send(f, VSOCK_OP_CREDIT_UPDATE, 77, port, 4096, 4096, NULL, 0);
	while (got < 8192 && (h = next_rx(f, NULL)) != NULL)
		got += h->op == VSOCK_OP_RW ? h->len : 0;
	assert_int_equal(got, 8192);
	/* Guest → host data, then a credit request answered with our fwd_cnt. */
	guest_send(f, VSOCK_OP_RW, 77, port, 8192, 8192, "hello", 5);
	memset(line, 0, sizeof(line));
	assert_int_equal(read_timeout(fd, line, sizeof(line)), 5);
	assert_string_equal(line, "hello");
	guest_send(f, VSOCK_OP_CREDIT_REQUEST, 77, port, 8192, 8192, NULL, 0);
	h = next_ctrl(f);
	assert_non_null(h);
	assert_int_equal(h->op, VSOCK_OP_CREDIT_UPDATE);
	assert_int_equal(h->fwd_cnt, 5);
	/* Data to a connection that does not exist is answered with RST. */
	guest_send(f, VSOCK_OP_RW, 78, port + 100, 8192, 0, "x", 1);
	h = next_ctrl(f);
	assert_non_null(h);
	assert_int_equal(h->op, VSOCK_OP_RST);
	assert_int_equal(h->dst_port, 78);
	/* The guest resets the connection: the host client sees EOF. */
	guest_send(f, VSOCK_OP_RST, 77, port, 0, 0, NULL, 0);
	while (read_timeout(fd, big, sizeof(big)) > 0)
		;
	assert_int_equal(read(fd, big, 1), 0);
	close(fd);
}

static void test_refused_and_bad_lines(void **state)
{
	struct fixture *f = *state;
	char buf[16];
	int fd = host_connect(f, "CONNECT 99\n");
	struct vsock_hdr *h = next_rx(f, NULL);

	assert_non_null(h);
	guest_send(f, VSOCK_OP_RST, 99, h->src_port, 0, 0, NULL, 0);
	assert_int_equal(read_timeout(fd, buf, sizeof(buf)), 0); /* closed, no "OK" */
	close(fd);
	fd = host_connect(f, "HELLO 5\n");
	assert_int_equal(read_timeout(fd, buf, sizeof(buf)), 0);
	close(fd);
	fd = host_connect(f, "CONNECT x\n");
	assert_int_equal(read_timeout(fd, buf, sizeof(buf)), 0);
	close(fd);
	assert_int_equal(f->v->stats.conns_accepted, 0);
}

static void test_restore_sends_transport_reset(void **state)
{
	struct fixture *f = *state;
	struct vsock_state st;

	for (int i = 0; i < 4; i++) {
		*desc(f, 2, i) = (struct virtq_desc){ RXBUF + 0x80000 + i * 16, 16, VIRTQ_DESC_F_WRITE, 0 };
		post(f, 2, (uint16_t)i);
	}
	vsock_save(f->v, &st);
	assert_int_equal(st.cid, 3);
	assert_int_equal(vsock_restore(f->v, &st), 0);
	for (int i = 0; i < 2000 && used(f, 2)[1] == 0; i++)
		usleep(1000);
	assert_int_equal(used(f, 2)[1], 1);
	assert_int_equal(*(uint32_t *)(f->ram + RXBUF + 0x80000), VSOCK_EVENT_TRANSPORT_RESET);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_handshake_credit_and_data, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refused_and_bad_lines, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restore_sends_transport_reset, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
