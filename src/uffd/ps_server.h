/* The page server: one process serving many VMs' userfaultfds from shared snapshot files. */
#ifndef FORKVM_UFFD_PS_SERVER_H
#define FORKVM_UFFD_PS_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <linux/userfaultfd.h>

#include "uffd/hotlist.h"
#include "uffd/ps_proto.h"
#include "util/clock.h"
#include "util/errmsg.h"
#include "util/evloop.h"

/* A snapshot's memory file, mapped read-only once and shared by every VM restored from it. */
struct ps_snap {
	struct ps_snap *next;
	int refs;
	dev_t dev;
	ino_t ino;
	char dir[PATH_MAX];
	const uint8_t *map;
	uint64_t size;
	uint8_t *data;		/* bit per page: 1 = the file has data there, 0 = hole */
	struct hot_layout layout;
	struct snap_config cfg;
};

/* PS_LOAD: reading the hot-page list / access log a bounded chunk per step, before PS_HOT. */
enum ps_phase { PS_HOT, PS_BACKGROUND, PS_IDLE, PS_LOAD };

struct ps_vm {
	struct ps_vm *next;
	struct ps_server *srv;
	int ev_id;		/* its uffd in the server's loop (EV_FIRST) */
	int id;
	struct ps_register reg;
	int uffd;
	struct ps_conn *conn;	/* NULL once the VMM's connection closed */
	struct ps_snap *snap;
	uint64_t npages;
	uint8_t *present;	/* bit per page: copied, zeroed, or found present (EEXIST) */
	uint8_t *discarded;	/* bit per page: REMOVE'd by the VMM, answered with zeroes */
	bool gone;		/* dropped: counters kept for status */
	struct uffd_msg *q;	/* events read but not yet handled (EAGAIN drains into it) */
	size_t qlen, qcap;
	char why[160];		/* why it was dropped */

	/* counters */
	uint64_t demand_faults, zero_faults, pages_prefetched, bytes_copied, eexist, eagain;
	uint64_t events_remove, events_unmap;
	uint64_t t_register, t_first_fault, t_settle, t_acked;

	/* prefetch: the hot set (before the ack), then the access log or sequential */
	enum ps_phase phase;
	uint64_t *hot;
	size_t nhot, hot_pos;
	uint64_t *order;
	size_t norder, order_pos;
	bool sequential;
	uint64_t seq_pos;
	char prefetch_note[200];	/* e.g. why the hot list was ignored */
	struct {
		int fd;		/* the list being read (-1: none) */
		int which;	/* 0: hotpages, 1: access.log */
		uint8_t *buf;
		size_t len, got; /* its size (bounded by the snapshot) and bytes read so far */
	} load;

	/* recorder: served pages in fault order, until settled */
	bool recording;
	uint64_t *rec;
	size_t nrec, caprec;
	char record_result[200];

	/* settle detector: total demand faults sampled every settle_ms / 10 */
	uint64_t samples[11];
	int nsamples;
	uint64_t next_sample;
};

struct ps_conn {
	struct ps_conn *next;
	struct ps_server *srv;
	int fd;
	int ev_id;
	char buf[PS_LINE_MAX];
	size_t len;
	struct ps_vm *vm;	/* the VM this connection registered */
	uint64_t deadline;	/* an unregistered, silent connection is closed at this time */
	bool dead;
};

struct ps_server {
	struct evloop loop;	/* uffds first, then connections, the socket and signals */
	struct ev_timer tick;	/* settle detectors, every 50 ms */
	int listen_fd, sig_fd;
	bool quit;
	const char *path;
	struct ps_conn *conns;
	struct ps_vm *vms;
	struct ps_snap *snaps;
	int next_id;
	int nconns;
	int ngone;
	uint32_t fault_around;	/* pages copied per demand fault when the file has data there */
	uint64_t t_start;
};

int ps_serve(const char *path, uint32_t fault_around);

/* ps_conn.c */
void ps_accept_all(struct ps_server *s);
void ps_conn_readable(struct ps_server *s, struct ps_conn *c);

/* ps_snap.c */
int ps_snap_get(struct ps_server *s, const char *dir, struct ps_snap **out, struct fvm_err *err);
void ps_snap_put(struct ps_server *s, struct ps_snap *snap);
static inline bool ps_bit(const uint8_t *bits, uint64_t i) { return bits[i / 8] & (1u << (i % 8)); }
static inline void ps_set_bit(uint8_t *bits, uint64_t i) { bits[i / 8] |= (uint8_t)(1u << (i % 8)); }

/* ps_register.c, ps_vm.c */
int ps_vm_register(struct ps_server *s, struct ps_conn *c, json_t *req, int uffd,
		   struct fvm_err *err);
void ps_vm_drop(struct ps_server *s, struct ps_vm *vm, const char *why);
void ps_vm_free(struct ps_vm *vm);
void ps_vm_uffd_ready(struct ps_server *s, struct ps_vm *vm);
/* Copy [page, page+n) into the VM (UFFDIO_COPY, or ZEROPAGE for holes); 0 or -errno. */
int ps_vm_fill(struct ps_server *s, struct ps_vm *vm, uint64_t page, uint64_t n, bool demand);

/* ps_prefetch.c */
/*
 * At registration: open the lists and check their sizes (a FIFO, a link, or a file larger
 * than the snapshot allows is refused here, at once) and set the phase. Their bytes are read
 * later, in bounded steps of the event loop (PS_LOAD), so other VMs are served meanwhile.
 */
int ps_prefetch_load(struct ps_vm *vm, struct fvm_err *err);
/* Close and free a list being loaded (a VM dropped or refused mid-load). */
void ps_prefetch_unload(struct ps_vm *vm);
/* One bounded chunk of prefetch work for vm; true while more remains. */
bool ps_prefetch_step(struct ps_server *s, struct ps_vm *vm);
void ps_record_page(struct ps_vm *vm, uint64_t page);
/* Graceful stop: fill every missing page, then send {"event":"populated"} to the VMM. */
void ps_vm_drain(struct ps_server *s, struct ps_vm *vm);
/* Settle detector tick; finishes a recording when it converged. */
void ps_settle_tick(struct ps_server *s, struct ps_vm *vm, uint64_t now);
void ps_record_finish(struct ps_vm *vm, const char *reason);
json_t *ps_vm_status(const struct ps_vm *vm);
void ps_send_ack(struct ps_vm *vm);
/* The registration fails after all (a list turned out damaged): {"ok":false,"error":...}. */
void ps_send_refusal(struct ps_vm *vm, const char *error);

#endif
