/* Split virtqueue device side: chains from the avail ring, completions to the used ring. */
#include "devices/virtqueue.h"

#include <errno.h>
#include <string.h>

#include "mem/dirty_log.h"
#include "mem/guest_mem.h"

#define AVAIL_FLAGS 0
#define AVAIL_IDX 1
#define AVAIL_RING 2

int virtq_activate(struct virtq *q, const struct guest_mem *mem, uint16_t max)
{
	uint64_t n = q->s.num;

	if (n == 0 || n > max || (n & (n - 1)))
		return -EINVAL;
	if ((q->s.desc_gpa & 15) || (q->s.avail_gpa & 1) || (q->s.used_gpa & 3))
		return -EINVAL;
	q->desc = guest_mem_ptr(mem, q->s.desc_gpa, 16 * n);
	q->avail = guest_mem_ptr(mem, q->s.avail_gpa, 6 + 2 * n);
	q->used = guest_mem_ptr(mem, q->s.used_gpa, 6 + 8 * n);
	if (!q->desc || !q->avail || !q->used) {
		q->desc = NULL;
		q->avail = NULL;
		q->used = NULL;
		return -EFAULT;
	}
	q->mem = mem;
	q->s.ready = 1;
	return 0;
}

void virtq_reset(struct virtq *q)
{
	memset(q, 0, sizeof(*q));
}

static uint16_t avail_idx(const struct virtq *q)
{
	return __atomic_load_n(&q->avail[AVAIL_IDX], __ATOMIC_ACQUIRE);
}

uint16_t virtq_avail_idx(const struct virtq *q)
{
	return q->s.ready ? avail_idx(q) : 0;
}

bool virtq_has_avail(const struct virtq *q)
{
	return q->s.ready && avail_idx(q) != q->s.last_avail;
}

bool virtq_wants_interrupt(const struct virtq *q)
{
	/* Order our used-ring writes before reading the driver's flag. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	return !(__atomic_load_n(&q->avail[AVAIL_FLAGS], __ATOMIC_RELAXED) &
		 VIRTQ_AVAIL_F_NO_INTERRUPT);
}

int virtq_pop(struct virtq *q, struct virtq_chain *c)
{
	uint16_t idx, head, i;
	int steps = 0;

	if (!q->s.ready)
		return 0;
	idx = avail_idx(q);
	if (idx == q->s.last_avail)
		return 0;
	if ((uint16_t)(idx - q->s.last_avail) > q->s.num)
		return -EINVAL; /* the driver claims more buffers than the ring holds */
	head = __atomic_load_n(&q->avail[AVAIL_RING + (q->s.last_avail & (q->s.num - 1))],
			       __ATOMIC_RELAXED);
	q->s.last_avail++;
	memset(c, 0, sizeof(*c));
	c->head = head;
	c->mem = q->mem;
	if (head >= q->s.num)
		return -EINVAL;
	for (i = head;; i = q->desc[i].next) {
		struct virtq_desc d;
		struct virtq_iov *iov;

		if (i >= q->s.num || ++steps > q->s.num)
			return -EINVAL; /* out of the table, or a loop */
		memcpy(&d, &q->desc[i], sizeof(d));
		if (d.flags & VIRTQ_DESC_F_INDIRECT)
			return -EINVAL; /* not offered */
		if (d.flags & VIRTQ_DESC_F_WRITE) {
			if (c->nwr == VIRTQ_MAX_IOV)
				return -EINVAL;
			iov = &c->wr[c->nwr++];
			c->wr_len += d.len;
		} else {
			if (c->nwr || c->nrd == VIRTQ_MAX_IOV)
				return -EINVAL; /* readable buffers must come first */
			iov = &c->rd[c->nrd++];
			c->rd_len += d.len;
		}
		iov->len = d.len;
		iov->gpa = d.addr;
		iov->base = d.len ? guest_mem_ptr(q->mem, d.addr, d.len) : NULL;
		if (d.len && !iov->base)
			return -EINVAL;
		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			break;
	}
	return 1;
}

void virtq_unpop(struct virtq *q)
{
	q->s.last_avail--;
}

void virtq_unpop_n(struct virtq *q, uint16_t n)
{
	q->s.last_avail = (uint16_t)(q->s.last_avail - n);
}

void virtq_fill(struct virtq *q, uint16_t k, uint16_t head, uint32_t len)
{
	struct virtq_used_elem e = { .id = head, .len = len };
	size_t slot = 4 + 8 * (size_t)((uint16_t)(q->s.used_idx + k) & (q->s.num - 1));

	memcpy(q->used + slot, &e, sizeof(e));
	/* KVM's dirty log cannot see the VMM's writes: diff snapshots need them marked. */
	guest_mem_mark_dirty(q->mem, q->s.used_gpa + slot, sizeof(e));
}

void virtq_flush(struct virtq *q, uint16_t n)
{
	uint16_t *used_idx = (uint16_t *)(q->used + 2);

	q->s.used_idx = (uint16_t)(q->s.used_idx + n);
	/* The elements must be visible before the index that publishes them. */
	__atomic_store_n(used_idx, q->s.used_idx, __ATOMIC_RELEASE);
	guest_mem_mark_dirty(q->mem, q->s.used_gpa, 4);
}

void virtq_push(struct virtq *q, uint16_t head, uint32_t len)
{
	virtq_fill(q, 0, head, len);
	virtq_flush(q, 1);
}

size_t virtq_chain_read(const struct virtq_chain *c, size_t off, void *dst, size_t len)
{
	size_t done = 0;

	for (int i = 0; i < c->nrd && done < len; i++) {
		size_t l = c->rd[i].len;
		if (off >= l) {
			off -= l;
			continue;
		}
		size_t n = l - off < len - done ? l - off : len - done;
		memcpy((uint8_t *)dst + done, c->rd[i].base + off, n);
		done += n;
		off = 0;
	}
	return done;
}

size_t virtq_chain_write(struct virtq_chain *c, size_t off, const void *src, size_t len)
{
	size_t done = 0;

	for (int i = 0; i < c->nwr && done < len; i++) {
		size_t l = c->wr[i].len;
		if (off >= l) {
			off -= l;
			continue;
		}
		size_t n = l - off < len - done ? l - off : len - done;
		memcpy(c->wr[i].base + off, (const uint8_t *)src + done, n);
		guest_mem_mark_dirty(c->mem, c->wr[i].gpa + off, n);
		done += n;
		off = 0;
	}
	return done;
}
