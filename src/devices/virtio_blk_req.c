/* virtio-blk requests: parse and check one descriptor chain, run it on the disk, set status. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>

#include "util/log.h"
#include "core/vm.h"
#include "devices/virtio_blk.h"
#include "disk/disk.h"
#include "mem/dirty_log.h"

#define HDR_LEN sizeof(struct virtio_blk_req_hdr)

/* The part [skip, skip + len) of a chain's buffers as iovecs; -EINVAL if they are shorter. */
static int chain_iov(const struct virtq_iov *v, int n, uint64_t skip, uint64_t len,
		     struct iovec *out)
{
	int k = 0;

	for (int i = 0; i < n && len; i++) {
		uint64_t l = v[i].len, take;

		if (skip >= l) {
			skip -= l;
			continue;
		}
		take = l - skip < len ? l - skip : len;
		out[k++] = (struct iovec){ v[i].base + skip, (size_t)take };
		len -= take;
		skip = 0;
	}
	return len ? -EINVAL : k;
}

/* The VMM wrote guest RAM behind KVM's back: diff snapshots must see those pages. */
static void mark_written(const struct virtq_chain *c, uint64_t len)
{
	for (int i = 0; i < c->nwr && len; i++) {
		uint64_t l = c->wr[i].len < len ? c->wr[i].len : len;

		guest_mem_mark_dirty(c->mem, c->wr[i].gpa, l);
		len -= l;
	}
}

/* A data range the disk holds: whole sectors, inside the capacity, no overflow. */
static bool range_ok(const struct virtio_blk *b, uint64_t sector, uint64_t len)
{
	uint64_t cap = b->disk->size / DISK_SECTOR;

	return len % DISK_SECTOR == 0 && len < UINT32_MAX && sector <= cap &&
	       len / DISK_SECTOR <= cap - sector;
}

static uint8_t do_in(struct virtio_blk *b, struct virtq_chain *c, uint64_t sector,
		     uint32_t *written)
{
	struct iovec iov[VIRTQ_MAX_IOV];
	uint64_t len = c->wr_len - 1;
	int n;

	if (!range_ok(b, sector, len) || (n = chain_iov(c->wr, c->nwr, 0, len, iov)) < 0)
		return VIRTIO_BLK_S_IOERR;
	if (disk_read(b->disk, sector * DISK_SECTOR, iov, n, len))
		return VIRTIO_BLK_S_IOERR;
	mark_written(c, len);
	*written = (uint32_t)len;
	b->stats.reads++;
	b->stats.bytes_read += len;
	return VIRTIO_BLK_S_OK;
}

static uint8_t do_out(struct virtio_blk *b, struct virtq_chain *c, uint64_t sector)
{
	struct iovec iov[VIRTQ_MAX_IOV];
	uint64_t len = c->rd_len - HDR_LEN;
	int n;

	if (!range_ok(b, sector, len) || (n = chain_iov(c->rd, c->nrd, HDR_LEN, len, iov)) < 0)
		return VIRTIO_BLK_S_IOERR;
	if (disk_write(b->disk, sector * DISK_SECTOR, iov, n, len))
		return VIRTIO_BLK_S_IOERR;
	b->stats.writes++;
	b->stats.bytes_written += len;
	return VIRTIO_BLK_S_OK;
}

static uint8_t do_get_id(struct virtio_blk *b, struct virtq_chain *c, uint32_t *written)
{
	char id[VIRTIO_BLK_ID_BYTES] = { 0 };
	uint64_t len = c->wr_len - 1;

	/* Shorter than 20 bytes: NUL-terminated; exactly 20: not (virtio 1.x 5.2.6). */
	memcpy(id, b->serial, strnlen(b->serial, sizeof(id)));
	len = len < sizeof(id) ? len : sizeof(id);
	*written = (uint32_t)virtq_chain_write(c, 0, id, len);
	return VIRTIO_BLK_S_OK;
}

/* One request whose chain has a status byte (the last device-writable byte). */
static uint8_t handle(struct virtio_blk *b, struct virtq_chain *c, uint32_t *written)
{
	struct virtio_blk_req_hdr h;

	*written = 0;
	if (c->rd_len < HDR_LEN)
		return VIRTIO_BLK_S_IOERR; /* no request header to read */
	virtq_chain_read(c, 0, &h, HDR_LEN);
	switch (h.type) {
	case VIRTIO_BLK_T_IN:
		return do_in(b, c, h.sector, written);
	case VIRTIO_BLK_T_OUT:
		return do_out(b, c, h.sector);
	case VIRTIO_BLK_T_FLUSH:
		b->stats.flushes++;
		return disk_flush(b->disk) ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK;
	case VIRTIO_BLK_T_GET_ID:
		return do_get_id(b, c, written);
	default:
		b->stats.unsupported++;
		return VIRTIO_BLK_S_UNSUPP;
	}
}

/* Returns the used length to report (data written + the status byte). */
uint32_t virtio_blk_request(struct virtio_blk *b, struct virtq_chain *c)
{
	uint32_t written;
	uint8_t status;

	if (c->wr_len == 0) {
		/* Nowhere to put a status: the driver learns only that the chain is used. */
		if (!b->warned_no_status)
			log_warn("virtio-blk slot %d: request without a status byte (head %u); logged "
				 "once", b->mmio->slot, c->head);
		b->warned_no_status = true;
		b->stats.errors++;
		return 0;
	}
	status = handle(b, c, &written);
	if (status == VIRTIO_BLK_S_IOERR)
		b->stats.errors++;
	virtq_chain_write(c, c->wr_len - 1, &status, 1);
	return written + 1;
}
