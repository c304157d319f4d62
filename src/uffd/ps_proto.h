/* Page-server handshake: the register message (JSON + SCM_RIGHTS uffd) and layout validation. */
#ifndef FORKVM_UFFD_PS_PROTO_H
#define FORKVM_UFFD_PS_PROTO_H

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "snapshot/snap_config.h"
#include "util/errmsg.h"

#define PS_PROTO_VERSION 1
#define PS_MAX_REGIONS 2
#define PS_LINE_MAX 16384 /* per connection; a register line is < 1 KiB */
#define PS_DEFAULT_SETTLE_MS 1000
#define PS_DEFAULT_RECORD_MAX_MS 60000

struct ps_region {
	uint64_t gpa, size, offset;
};

/* What a restoring VMM tells the server; the uffd itself travels as SCM_RIGHTS. */
struct ps_register {
	char snapshot[PATH_MAX];	/* absolute snapshot directory */
	char name[64];			/* VM name, for status and logs */
	int pid;
	uint64_t base;			/* host address of guest RAM offset 0 in the VMM */
	uint64_t size;			/* bytes of guest RAM registered with the uffd */
	uint64_t file_offset;		/* where guest RAM starts in the memory file */
	uint64_t page_size;		/* 4096 */
	int nregions;
	struct ps_region regions[PS_MAX_REGIONS];
	bool record;			/* record hot pages + access log until settled */
	bool prefetch;			/* prefetch the hot set before the ack, then the log */
	bool allow_bad_hotpages;	/* a damaged hot list → no prefetch instead of an error */
	uint32_t settle_ms;		/* settle window of the recorder */
	uint32_t record_max_ms;		/* recording stops after this at the latest */
};

/* {"cmd":"register","version":1,...}; caller json_decref()s. */
json_t *ps_register_to_json(const struct ps_register *r);
/* Strict: every field typed and in range, no unknown fields. */
int ps_register_from_json(json_t *obj, struct ps_register *r, struct fvm_err *err);
/*
 * The layout must match the snapshot: page size 4096, base page aligned, size equal to
 * the snapshot's RAM and to the memory file, file offset 0, and the same regions.
 */
int ps_layout_check(const struct ps_register *r, const struct snap_config *cfg,
		    uint64_t memory_file_size, struct fvm_err *err);

#endif
