/* virtio-net without KVM: config space, feature checks, malformed chains (device needs reset,
 * never a crash), the control queue's announce, TAP hand-over; a real TAP where we may. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "devices/virtio_net.h"
#include "util/errmsg.h"
#include "virtio_testvm.h"

#define QN 16
#define QBASE 0x100000ULL /* rings of queue q at QBASE + q * 0x10000 */
#define BUFS 0x200000ULL
#define BUFSZ 2048
#define FAR (TVM_MEM + 0x100000ULL) /* outside guest RAM */

struct fixture {
	struct vm vm;
	struct virtio_net *n;
	uint8_t *ram;
	uint16_t avail[3];
	char tap[IFNAMSIZ];
};

static const uint8_t MAC[6] = { 0x02, 0x11, 0x22, 0x33, 0x44, 0x55 };

static struct virtq_desc *desc(struct fixture *f, int q, int i)
{
	return (struct virtq_desc *)(f->ram + QBASE + (uint64_t)q * 0x10000) + i;
}
static uint16_t *avail(struct fixture *f, int q) { return (uint16_t *)(f->ram + QBASE + (uint64_t)q * 0x10000 + 0x1000); }
static uint16_t *used(struct fixture *f, int q) { return (uint16_t *)(f->ram + QBASE + (uint64_t)q * 0x10000 + 0x2000); }
static uint32_t used_len(struct fixture *f, int q, uint16_t i)
{
	return *(uint32_t *)((uint8_t *)used(f, q) + 8 + 8 * (i % QN));
}
static struct virtio_mmio *mm(struct fixture *f) { return virtio_net_transport(f->n); }

static void post(struct fixture *f, int q, uint16_t head)
{
	avail(f, q)[2 + f->avail[q] % QN] = head;
	f->avail[q]++;
	__atomic_store_n(&avail(f, q)[1], f->avail[q], __ATOMIC_RELEASE);
	tvm_wr(mm(f), VMMIO_QUEUE_NOTIFY, (uint32_t)q);
}

/* Wait (2 s at most) for queue q's used index to reach want. */
static bool wait_used(struct fixture *f, int q, uint16_t want)
{
	for (int i = 0; i < 2000; i++) {
		if (__atomic_load_n(&used(f, q)[1], __ATOMIC_ACQUIRE) == want)
			return true;
		usleep(1000);
	}
	return false;
}

static bool wait_status(struct fixture *f, uint32_t bit)
{
	for (int i = 0; i < 2000; i++) {
		if (tvm_rd(mm(f), VMMIO_STATUS) & bit)
			return true;
		usleep(1000);
	}
	return false;
}

/* ACK, DRIVER, the features, FEATURES_OK; whether it stuck. */
static bool negotiate(struct virtio_mmio *m, uint64_t features)
{
	tvm_wr(m, VMMIO_STATUS, 0);
	tvm_wr(m, VMMIO_STATUS, VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER);
	tvm_wr(m, VMMIO_DRV_FEATURES_SEL, 0);
	tvm_wr(m, VMMIO_DRV_FEATURES, (uint32_t)features);
	tvm_wr(m, VMMIO_DRV_FEATURES_SEL, 1);
	tvm_wr(m, VMMIO_DRV_FEATURES, (uint32_t)(features >> 32));
	tvm_wr(m, VMMIO_STATUS, VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
	return tvm_rd(m, VMMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK;
}

/* A driver with these features and all three queues, DRIVER_OK. */
static void bring_up(struct fixture *f, uint64_t features)
{
	memset(f->ram + QBASE, 0, 0x30000);
	memset(f->avail, 0, sizeof(f->avail));
	assert_true(negotiate(mm(f), features | VIRTIO_F_VERSION_1));
	for (int q = 0; q < VIRTIO_NET_QUEUES; q++)
		tvm_queue(mm(f), (uint32_t)q, QN, QBASE + (uint64_t)q * 0x10000);
	tvm_wr(mm(f), VMMIO_STATUS, 0xf);
	assert_int_equal(tvm_rd(mm(f), VMMIO_STATUS), 0xf);
}

static int setup(void **state)
{
	static struct fixture f;

	memset(&f, 0, sizeof(f));
	if (tvm_init(&f.vm) || virtio_net_create(&f.vm, 0, -1, MAC, &f.n) ||
	    virtio_net_start(f.n))
		return -1;
	f.ram = f.vm.mem.host;
	f.vm.started = true; /* the device holds back until the VM runs */
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	virtio_net_destroy(f->n);
	guest_mem_destroy(&f->vm.mem);
	return 0;
}

/* A TAP of our own (root only; the test skips without one), up, IPv6 off. */
static int open_tap(struct fixture *f)
{
	struct ifreq ifr = { .ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR };
	int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC), s;
	char path[96];
	FILE *p;

	if (fd < 0)
		return -1;
	snprintf(f->tap, sizeof(f->tap), "fvu%d", (int)getpid() % 1000000);
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", f->tap);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		close(fd);
		return -1;
	}
	snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/disable_ipv6", f->tap);
	p = fopen(path, "w");
	if (p) {
		fputs("1", p);
		fclose(p);
	}
	s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ifr.ifr_mtu = 4000; /* room for the 3000-byte frame */
	if (s >= 0)
		ioctl(s, SIOCSIFMTU, &ifr);
	if (s >= 0 && ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
		ifr.ifr_flags |= IFF_UP;
		ioctl(s, SIOCSIFFLAGS, &ifr);
	}
	if (s >= 0)
		close(s);
	return fd;
}

static void test_config_space_and_features(void **state)
{
	struct fixture *f = *state;
	uint64_t offered;
	uint8_t cfg[8];

	assert_int_equal(tvm_rd(mm(f), VMMIO_DEVICE_ID), VIRTIO_ID_NET);
	tvm_wr(mm(f), VMMIO_DEV_FEATURES_SEL, 0);
	offered = tvm_rd(mm(f), VMMIO_DEV_FEATURES);
	tvm_wr(mm(f), VMMIO_DEV_FEATURES_SEL, 1);
	offered |= (uint64_t)tvm_rd(mm(f), VMMIO_DEV_FEATURES) << 32;
	assert_int_equal(offered, VIRTIO_NET_FEATURES | VIRTIO_F_VERSION_1);
	for (int i = 0; i < 8; i++)
		virtio_mmio_access(mm(f), NULL, VMMIO_CONFIG + (uint64_t)i, &cfg[i], 1, false);
	assert_memory_equal(cfg, MAC, 6);
	assert_int_equal(cfg[6] | cfg[7] << 8, 0); /* no TAP: link down */
	/* Prerequisites (virtio 1.x 5.1.3.1): FEATURES_OK does not stick without them. */
	assert_false(negotiate(mm(f), VIRTIO_F_VERSION_1 | VIRTIO_NET_F_GUEST_TSO4));
	assert_false(negotiate(mm(f), VIRTIO_F_VERSION_1 | VIRTIO_NET_F_GUEST_CSUM | VIRTIO_NET_F_GUEST_ECN));
	assert_false(negotiate(mm(f), VIRTIO_F_VERSION_1 | VIRTIO_NET_F_HOST_TSO6));
	assert_false(negotiate(mm(f), VIRTIO_F_VERSION_1 | VIRTIO_NET_F_GUEST_ANNOUNCE));
	assert_false(negotiate(mm(f), VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MTU)); /* not offered */
	assert_true(negotiate(mm(f), VIRTIO_F_VERSION_1 | VIRTIO_NET_FEATURES));
	assert_true(negotiate(mm(f), VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MAC));
	/* The TAP offloads that follow. */
	assert_int_equal(virtio_net_tap_offloads(VIRTIO_NET_FEATURES), TUN_F_CSUM | TUN_F_TSO4 |
			 TUN_F_TSO6 | TUN_F_TSO_ECN);
	assert_int_equal(virtio_net_tap_offloads(VIRTIO_NET_F_GUEST_CSUM), TUN_F_CSUM);
	assert_int_equal(virtio_net_tap_offloads(VIRTIO_NET_F_MRG_RXBUF | VIRTIO_NET_F_HOST_TSO4), 0);
}

/* Descriptors d, d + 1 of a guest frame: a 12-byte header, then len bytes of frame. */
static void tx_desc(struct fixture *f, int d, uint32_t len)
{
	memset(f->ram + BUFS + (uint64_t)d * BUFSZ, 0xab, BUFSZ);
	memset(f->ram + BUFS + (uint64_t)d * BUFSZ, 0, VIRTIO_NET_HDR_LEN);
	*desc(f, 1, d) = (struct virtq_desc){ BUFS + (uint64_t)d * BUFSZ, VIRTIO_NET_HDR_LEN,
					      VIRTQ_DESC_F_NEXT, (uint16_t)(d + 1) };
	*desc(f, 1, d + 1) = (struct virtq_desc){ BUFS + (uint64_t)d * BUFSZ + 64, len, 0, 0 };
}

/* ... and made available to the device. */
static void tx_frame(struct fixture *f, int d, uint32_t len)
{
	tx_desc(f, d, len);
	post(f, 1, (uint16_t)d);
}

static void test_detached_nic_drops_tx(void **state)
{
	struct fixture *f = *state;
	struct virtio_net_info in;

	bring_up(f, VIRTIO_NET_FEATURES);
	for (int i = 0; i < 4; i++)
		tx_frame(f, 2 * i, 60);
	assert_true(wait_used(f, 1, 4));
	virtio_net_get_info(f->n, &in);
	assert_false(in.attached);
	assert_int_equal(in.stats.tx_dropped, 4);
	assert_int_equal(in.stats.malformed, 0);
	assert_int_equal(tvm_rd(mm(f), VMMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET, 0);
}

/* Each kind of bad transmit chain: logged, DEVICE_NEEDS_RESET, and a reset brings it back. */
static void test_malformed_tx_chains_need_reset(void **state)
{
	struct fixture *f = *state;
	struct virtio_net_info in;

	for (int kind = 0; kind < 5; kind++) {
		bring_up(f, VIRTIO_NET_F_MAC);
		tx_desc(f, 0, 60);
		switch (kind) {
		case 0: desc(f, 1, 1)->flags = VIRTQ_DESC_F_WRITE; break;		/* writable */
		case 1: desc(f, 1, 1)->len = 1; break;					/* too short */
		case 2: desc(f, 1, 1)->addr = FAR; break;				/* out of RAM */
		case 3: *desc(f, 1, 1) = (struct virtq_desc){ BUFS, 64, VIRTQ_DESC_F_NEXT, 0 }; break; /* loop */
		case 4: desc(f, 1, 0)->next = QN + 3; break;				/* out of the table */
		}
		post(f, 1, 0);
		assert_true(wait_status(f, VIRTIO_STATUS_NEEDS_RESET));
		assert_true(tvm_rd(mm(f), VMMIO_INT_STATUS) & VIRTIO_INT_CONFIG);
		virtio_net_get_info(f->n, &in);
		assert_int_equal(in.stats.malformed, (uint64_t)kind + 1);
		/* A reset, and good frames go through again. */
		bring_up(f, VIRTIO_NET_F_MAC);
		tx_frame(f, 0, 60);
		assert_true(wait_used(f, 1, 1));
	}
}

static void test_state_check(void **state)
{
	struct virtio_net_state st = { .mac = { 0x02, 1, 2, 3, 4, 5 }, .status = 3 };
	struct fvm_err err = FVM_ERR_INIT;

	(void)state;
	assert_int_equal(virtio_net_state_check(&st, &err), 0);
	st.mac[0] = 0x03;
	assert_int_equal(virtio_net_state_check(&st, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "unicast"));
	memset(st.mac, 0, 6);
	assert_int_equal(virtio_net_state_check(&st, &err), -EINVAL);
	st.mac[0] = 0x02;
	st.status = 4;
	assert_int_equal(virtio_net_state_check(&st, &err), -EINVAL);
}

static void test_set_tap_refuses_what_is_not_a_tap(void **state)
{
	struct fixture *f = *state;
	int fd = eventfd(0, EFD_CLOEXEC);

	assert_true(fd >= 0);
	assert_true(virtio_net_set_tap(f->n, fd) < 0);
	assert_int_equal(fcntl(fd, F_GETFD), -1); /* taken over: closed */
	assert_int_equal(errno, EBADF);
}

/* Host side of the TAP: one frame out of it, toward the guest. */
static void host_send(struct fixture *f, const uint8_t *frame, size_t len)
{
	struct sockaddr_ll a = { .sll_family = AF_PACKET, .sll_protocol = htons(0x88b5),
				 .sll_ifindex = (int)if_nametoindex(f->tap), .sll_halen = 6 };
	int s = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(0x88b5));
	ssize_t n;

	assert_true(s >= 0);
	n = sendto(s, frame, len, 0, (struct sockaddr *)&a, sizeof(a));
	if (n < 0)
		fprintf(stderr, "sendto %s: %s\n", f->tap, strerror(errno));
	assert_int_equal(n, (ssize_t)len);
	close(s);
}

/* With a real TAP: link up + an announcement, its acknowledgement on the control queue,
 * merged receive buffers, and a receive chain with a readable buffer (needs reset). */
static void test_tap_announce_rx_and_bad_rx_chain(void **state)
{
	struct fixture *f = *state;
	struct virtio_net_info in;
	uint8_t frame[3000], cfg[2], *ctl = f->ram + BUFS + 60 * BUFSZ;
	int fd = open_tap(f);

	if (fd < 0) {
		skip(); /* no CAP_NET_ADMIN or no /dev/net/tun here */
		return;
	}
	bring_up(f, VIRTIO_NET_FEATURES);
	assert_int_equal(virtio_net_set_tap(f->n, fd), 0);
	for (int i = 0; i < 2000; i++) {
		virtio_net_get_info(f->n, &in);
		if (in.status & VIRTIO_NET_S_ANNOUNCE)
			break;
		usleep(1000);
	}
	assert_true(in.attached);
	assert_int_equal(in.status, VIRTIO_NET_S_LINK_UP | VIRTIO_NET_S_ANNOUNCE);
	virtio_mmio_access(mm(f), NULL, VMMIO_CONFIG + 6, cfg, 2, false);
	assert_int_equal(cfg[0], VIRTIO_NET_S_LINK_UP | VIRTIO_NET_S_ANNOUNCE);
	/* An unknown command is refused, the announce ack accepted. */
	ctl[0] = 1, ctl[1] = 0, ctl[8] = 0x77;
	*desc(f, 2, 0) = (struct virtq_desc){ BUFS + 60 * BUFSZ, 2, VIRTQ_DESC_F_NEXT, 1 };
	*desc(f, 2, 1) = (struct virtq_desc){ BUFS + 60 * BUFSZ + 8, 1, VIRTQ_DESC_F_WRITE, 0 };
	post(f, 2, 0);
	assert_true(wait_used(f, 2, 1));
	assert_int_equal(ctl[8], VIRTIO_NET_ERR);
	ctl[0] = VIRTIO_NET_CTRL_ANNOUNCE, ctl[1] = VIRTIO_NET_CTRL_ANNOUNCE_ACK;
	post(f, 2, 0);
	assert_true(wait_used(f, 2, 2));
	assert_int_equal(ctl[8], VIRTIO_NET_OK);
	virtio_net_get_info(f->n, &in);
	assert_int_equal(in.status, VIRTIO_NET_S_LINK_UP);
	assert_int_equal(in.stats.announces, 1);
	/* A 3000-byte frame over two 2 KiB buffers: num_buffers 2, both used at once. */
	for (int i = 0; i < 2; i++) {
		*desc(f, 0, i) = (struct virtq_desc){ BUFS + (uint64_t)i * BUFSZ, BUFSZ, VIRTQ_DESC_F_WRITE, 0 };
		post(f, 0, (uint16_t)i);
	}
	memcpy(frame, MAC, 6);
	memset(frame + 6, 0x42, sizeof(frame) - 6);
	frame[6] = 0x02, frame[12] = 0x88, frame[13] = 0xb5;
	host_send(f, frame, sizeof(frame));
	assert_true(wait_used(f, 0, 2));
	assert_int_equal(used_len(f, 0, 0) + used_len(f, 0, 1), VIRTIO_NET_HDR_LEN + sizeof(frame));
	assert_int_equal(((struct virtio_net_hdr_v1 *)(f->ram + BUFS))->num_buffers, 2);
	assert_memory_equal(f->ram + BUFS + VIRTIO_NET_HDR_LEN, frame, BUFSZ - VIRTIO_NET_HDR_LEN);
	assert_memory_equal(f->ram + BUFS + BUFSZ, frame + BUFSZ - VIRTIO_NET_HDR_LEN,
			    sizeof(frame) - (BUFSZ - VIRTIO_NET_HDR_LEN));
	/* A receive chain with a device-readable buffer: malformed. */
	*desc(f, 0, 2) = (struct virtq_desc){ BUFS + 2 * BUFSZ, BUFSZ, 0, 0 };
	post(f, 0, 2);
	host_send(f, frame, 100);
	assert_true(wait_status(f, VIRTIO_STATUS_NEEDS_RESET));
	/* Detaching: link down, a config interrupt for the driver. */
	bring_up(f, VIRTIO_NET_FEATURES);
	assert_int_equal(virtio_net_set_tap(f->n, -1), 0);
	for (int i = 0; i < 2000; i++) {
		virtio_net_get_info(f->n, &in);
		if (!in.attached)
			break;
		usleep(1000);
	}
	assert_false(in.attached);
	assert_int_equal(in.status, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_config_space_and_features, setup, teardown),
		cmocka_unit_test_setup_teardown(test_detached_nic_drops_tx, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_tx_chains_need_reset, setup, teardown),
		cmocka_unit_test(test_state_check),
		cmocka_unit_test_setup_teardown(test_set_tap_refuses_what_is_not_a_tap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tap_announce_rx_and_bad_rx_chain, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
