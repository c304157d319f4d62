/* Probe vsock driver setup: device checks, feature negotiation, queues and buffers in the area. */
#include "vsock_drv_impl.h"
#include "virtio_drv.h"

static int setup_queue(struct drv *d, int q, uint64_t area)
{
	struct vq *v = &d->q[q];

	v->base = area + OFF_QUEUE(q);
	return virtio_drv_queue(d->mmio, (uint32_t)q, v->base, QN);
}

uint32_t vsock_start(mailbox_t *mb, uint64_t port, uint64_t area, uint64_t mmio, uint64_t *cid)
{
	struct drv *d = (struct drv *)area;

	zero((void *)area, OFF_RING);
	d->mmio = mmio ? mmio : PROBE_VSOCK_MMIO_DEFAULT;
	d->port = (uint32_t)port;
	if (rd(d, 0x000) != 0x74726976 || rd(d, 0x004) != 2 || rd(d, 0x008) != VIRTIO_ID_VSOCK)
		return PROBE_ENODEV;
	wr(d, 0x070, 0);     /* reset */
	wr(d, 0x070, 1 | 2); /* ACKNOWLEDGE | DRIVER */
	wr(d, 0x014, 1);
	if (!(rd(d, 0x010) & 1))
		return PROBE_EIO; /* no VIRTIO_F_VERSION_1 */
	wr(d, 0x024, 0);
	wr(d, 0x020, 0);
	wr(d, 0x024, 1);
	wr(d, 0x020, 1);
	wr(d, 0x070, 1 | 2 | 8);
	if (!(rd(d, 0x070) & 8))
		return PROBE_EIO;
	for (int q = 0; q < 3; q++)
		if (setup_queue(d, q, area))
			return PROBE_EIO;
	for (uint16_t i = 0; i < QN; i++) {
		DESC(&d->q[VSOCK_QUEUE_RX], i)->addr = area + OFF_RXBUF + (uint64_t)i * BUF;
		DESC(&d->q[VSOCK_QUEUE_RX], i)->len = BUF;
		DESC(&d->q[VSOCK_QUEUE_RX], i)->flags = 2; /* device-writable */
		vq_post(&d->q[VSOCK_QUEUE_RX], i);
		DESC(&d->q[VSOCK_QUEUE_TX], i)->addr = area + OFF_TXBUF + (uint64_t)i * BUF;
		d->tx_free[d->ntx_free++] = i;
	}
	for (uint16_t i = 0; i < 4; i++) {
		DESC(&d->q[VSOCK_QUEUE_EVENT], i)->addr = area + OFF_EVBUF + i * 16ULL;
		DESC(&d->q[VSOCK_QUEUE_EVENT], i)->len = 16;
		DESC(&d->q[VSOCK_QUEUE_EVENT], i)->flags = 2;
		vq_post(&d->q[VSOCK_QUEUE_EVENT], i);
	}
	d->cid = rd(d, 0x100) | ((uint64_t)rd(d, 0x104) << 32);
	wr(d, 0x070, 1 | 2 | 8 | 4); /* DRIVER_OK */
	wr(d, 0x050, VSOCK_QUEUE_RX); /* buffers are there */
	*cid = d->cid;
	barrier();
	mb->vsock_area = area;
	return PROBE_OK;
}
